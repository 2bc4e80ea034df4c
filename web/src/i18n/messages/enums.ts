/** Labels of the 0.4 wire values; the values themselves never change. */
export default {
  en: {
    accountType: {
      giro: 'Checking', tagesgeld: 'Instant access savings', festgeld: 'Fixed deposit', spar: 'Savings',
      kreditkarte: 'Credit card', depot: 'Securities', bauspar: 'Building savings', darlehen: 'Loan',
      geschaeft: 'Business', gemeinschaft: 'Joint account', fremdwaehrung: 'Foreign currency',
      virtuell: 'Virtual', bar: 'Cash', sonstiges: 'Other',
    },
    transactionType: {
      EXPENSE: 'Expense', INCOME: 'Income', ACCOUNTTRANSFER: 'Transfer', CATEGORYTRANSFER: 'Budget transfer',
      RECONCILE: 'Reconciliation',
    },
  },
  de: {
    accountType: {
      giro: 'Girokonto', tagesgeld: 'Tagesgeld', festgeld: 'Festgeld', spar: 'Sparkonto',
      kreditkarte: 'Kreditkarte', depot: 'Depot', bauspar: 'Bausparvertrag', darlehen: 'Darlehen',
      geschaeft: 'Geschäftskonto', gemeinschaft: 'Gemeinschaftskonto', fremdwaehrung: 'Fremdwährungskonto',
      virtuell: 'Virtuelles Konto', bar: 'Bargeld', sonstiges: 'Sonstiges',
    },
    transactionType: {
      EXPENSE: 'Ausgabe', INCOME: 'Einnahme', ACCOUNTTRANSFER: 'Umbuchung', CATEGORYTRANSFER: 'Budgetumbuchung',
      RECONCILE: 'Abgleich',
    },
  },
}
