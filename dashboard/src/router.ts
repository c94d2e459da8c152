// Pages and the sign-in guard. History mode: control answers unknown non-API paths with
// index.html.
import { createRouter, createWebHistory, type RouteRecordRaw } from 'vue-router'
import { loadSession, session, sessionChecked } from './session'
import SignIn from './pages/SignIn.vue'
import Overview from './pages/OverviewPage.vue'
import Projects from './pages/ProjectsPage.vue'
import ProjectDetail from './pages/ProjectDetail.vue'
import Tokens from './pages/TokensPage.vue'
import Providers from './pages/ProvidersPage.vue'
import Usage from './pages/UsagePage.vue'
import Audit from './pages/AuditPage.vue'

export const routes: RouteRecordRaw[] = [
  { path: '/signin', name: 'signin', component: SignIn, meta: { public: true, title: 'Sign in' } },
  { path: '/', name: 'overview', component: Overview, meta: { title: 'Overview' } },
  { path: '/projects', name: 'projects', component: Projects, meta: { title: 'Projects' } },
  { path: '/projects/:id', name: 'project', component: ProjectDetail, props: true, meta: { title: 'Project' } },
  { path: '/tokens', name: 'tokens', component: Tokens, meta: { title: 'Tokens' } },
  { path: '/providers', name: 'providers', component: Providers, meta: { title: 'Providers', globalReader: true } },
  { path: '/usage', name: 'usage', component: Usage, meta: { title: 'Usage' } },
  { path: '/audit', name: 'audit', component: Audit, meta: { title: 'Audit log', globalReader: true } },
  { path: '/:rest(.*)*', redirect: '/' },
]

export const router = createRouter({ history: createWebHistory('/'), routes })

router.beforeEach(async (to) => {
  if (!sessionChecked.value) {
    try {
      await loadSession()
    } catch {
      // control unreachable: show the sign-in page with its own error
    }
  }
  if (to.meta.public) return session.value && to.name === 'signin' ? { name: 'overview' } : true
  if (!session.value) return { name: 'signin', query: to.fullPath !== '/' ? { next: to.fullPath } : {} }
  if (to.meta.globalReader && session.value.role === 'project') return { name: 'overview' }
  return true
})

router.afterEach((to) => {
  document.title = `${String(to.meta.title ?? 'Iron')} · Iron`
})
