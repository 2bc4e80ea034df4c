// PLACEHOLDER until ts-rs output is committed (shape of finwise-protocol's `EntityType`).
export type EntityType = "Account" | "AccountGroup" | "Category" | "CategoryGroup" | "Recipient" | "Tag" | "AutomationRule" | "PlanningTransaction" | "Transaction";
