/** The app shell: navigation, header, session and access banners. */
export default {
  en: {
    nav: {
      accounts: 'Accounts', transactions: 'Transactions', categories: 'Categories', recipients: 'Recipients',
      tags: 'Tags', household: 'Household', transfers: 'Transfers', budget: 'Budget', planning: 'Planning',
      rules: 'Rules', reports: 'Reports',
    },
    mainNav: 'Sections',
    switchTenant: 'Households',
    sessionExpired: 'Your session expired. Changes are kept locally; log out and in again to sync them.',
    lost: {
      revoked: 'You were removed from the household “{name}”. Its data was removed from this device.',
      deleted: 'The household “{name}” was deleted. Its data was removed from this device.',
      gone: 'You no longer have access to the household “{name}”. Its data was removed from this device.',
    },
    dismiss: 'Dismiss',
  },
  de: {
    nav: {
      accounts: 'Konten', transactions: 'Buchungen', categories: 'Kategorien', recipients: 'Empfänger',
      tags: 'Tags', household: 'Haushalt', transfers: 'Umbuchungen', budget: 'Budget', planning: 'Planung',
      rules: 'Regeln', reports: 'Auswertungen',
    },
    mainNav: 'Bereiche',
    switchTenant: 'Haushalte',
    sessionExpired: 'Deine Sitzung ist abgelaufen. Änderungen bleiben lokal gespeichert; melde dich ab und wieder an, um sie zu synchronisieren.',
    lost: {
      revoked: 'Du wurdest aus dem Haushalt „{name}“ entfernt. Seine Daten wurden von diesem Gerät gelöscht.',
      deleted: 'Der Haushalt „{name}“ wurde gelöscht. Seine Daten wurden von diesem Gerät entfernt.',
      gone: 'Du hast keinen Zugriff mehr auf den Haushalt „{name}“. Seine Daten wurden von diesem Gerät gelöscht.',
    },
    dismiss: 'Schließen',
  },
}
