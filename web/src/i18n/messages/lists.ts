/** The named lists (recipients, tags) and the inline rename. */
export default {
  en: {
    title: { Recipient: 'Recipients', Tag: 'Tags' },
    new: { Recipient: 'New recipient', Tag: 'New tag' },
    color: 'Colour',
    empty: 'Nothing yet.',
    rename: 'Rename',
  },
  de: {
    title: { Recipient: 'Empfänger', Tag: 'Tags' },
    new: { Recipient: 'Neuer Empfänger', Tag: 'Neuer Tag' },
    color: 'Farbe',
    empty: 'Noch nichts da.',
    rename: 'Umbenennen',
  },
}
