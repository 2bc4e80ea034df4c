export default {
  en: {
    add: 'Add',
    save: 'Save',
    cancel: 'Cancel',
    delete: 'Delete',
    logout: 'Log out',
    tenants: 'Households',
    language: 'Language',
  },
  de: {
    add: 'Hinzufügen',
    save: 'Speichern',
    cancel: 'Abbrechen',
    delete: 'Löschen',
    logout: 'Abmelden',
    tenants: 'Haushalte',
    language: 'Sprache',
  },
}
