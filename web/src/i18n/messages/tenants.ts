export default {
  en: {
    title: 'Your households',
    none: 'No household yet — create one below.',
    open: 'Open',
    newTenant: 'New household',
    placeholder: 'e.g. Family Miller',
    create: 'Create',
  },
  de: {
    title: 'Deine Haushalte',
    none: 'Noch kein Haushalt – lege unten einen an.',
    open: 'Öffnen',
    newTenant: 'Neuer Haushalt',
    placeholder: 'z. B. Familie Müller',
    create: 'Anlegen',
  },
}
