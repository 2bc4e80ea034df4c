import { createRouter, createWebHashHistory } from 'vue-router'
import { useAppStore } from './stores/app'
import AuthView from './views/AuthView.vue'
import TenantsView from './views/TenantsView.vue'
import AccountsView from './views/AccountsView.vue'
import CategoriesView from './views/CategoriesView.vue'
import NamedListView from './views/NamedListView.vue'
import TransactionsView from './views/TransactionsView.vue'
import HouseholdView from './views/HouseholdView.vue'
import TransfersView from './views/TransfersView.vue'
import BudgetView from './views/BudgetView.vue'
import PlanningView from './views/PlanningView.vue'
import RulesView from './views/RulesView.vue'

export const router = createRouter({
  history: createWebHashHistory(),
  scrollBehavior: (_to, _from, saved) => saved ?? { top: 0 },
  routes: [
    { path: '/', redirect: '/accounts' },
    { path: '/login', component: AuthView, meta: { public: true } },
    { path: '/register', component: AuthView, meta: { public: true, register: true } },
    { path: '/tenants', component: TenantsView },
    { path: '/accounts', component: AccountsView, meta: { tenant: true } },
    { path: '/categories', component: CategoriesView, meta: { tenant: true } },
    { path: '/recipients', component: NamedListView, meta: { tenant: true, kind: 'Recipient' } },
    { path: '/tags', component: NamedListView, meta: { tenant: true, kind: 'Tag' } },
    { path: '/transactions', component: TransactionsView, meta: { tenant: true } },
    { path: '/household', component: HouseholdView, meta: { tenant: true } },
    { path: '/transfers', component: TransfersView, meta: { tenant: true } },
    { path: '/budget', component: BudgetView, meta: { tenant: true } },
    { path: '/planning', component: PlanningView, meta: { tenant: true } },
    { path: '/rules', component: RulesView, meta: { tenant: true } },
    { path: '/reports', component: () => import('./views/ReportsView.vue'), meta: { tenant: true } },
  ],
})

router.beforeEach(async (to) => {
  const app = useAppStore()
  if (to.meta.public) return app.session ? '/tenants' : true
  if (!app.session) return '/login'
  if (to.meta.tenant) {
    await app.resume()
    if (!app.sync) return '/tenants'
  }
  return true
})
