import { mount } from '@vue/test-utils'
import { describe, expect, it } from 'vitest'
import BudgetBar, { budgetShares } from '../src/components/BudgetBar.vue'

describe('budgetShares', () => {
  it('splits the limit into spent, leased and remaining', () => {
    expect(budgetShares(1_000_000, 250_000, 100_000)).toEqual({ spentPct: 25, leasedPct: 10, remaining: 650_000, over: false })
  })
  it('clamps when spend exceeds the limit', () => {
    expect(budgetShares(1_000_000, 900_000, 300_000)).toEqual({ spentPct: 90, leasedPct: 10, remaining: 0, over: true })
    expect(budgetShares(1_000_000, 2_000_000, 0)).toMatchObject({ spentPct: 100, leasedPct: 0, remaining: 0, over: true })
  })
  it('has no bar for unlimited budgets and a full bar for a zero limit', () => {
    expect(budgetShares(null, 5, 5)).toEqual({ spentPct: 0, leasedPct: 0, remaining: null, over: false })
    expect(budgetShares(0, 0, 0)).toMatchObject({ spentPct: 100, remaining: 0 })
  })
})

describe('BudgetBar', () => {
  it('renders figures, widths and test hooks', () => {
    const w = mount(BudgetBar, { props: { projectId: 'prj_1', limit: 1_000_000, spent: 250_000, leased: 100_000 } })
    const root = w.get('[data-testid="budget-bar-prj_1"]')
    expect(root.attributes('data-spent-microdollars')).toBe('250000')
    expect(w.get('[data-testid="budget-spent"]').text()).toBe('$0.25')
    expect(w.get('[data-testid="budget-leased"]').text()).toBe('$0.10')
    expect(w.get('[data-testid="budget-remaining"]').text()).toBe('$0.65')
    expect(w.get('[data-testid="budget-limit"]').text()).toBe('$1.00')
    expect(w.get('.spent').attributes('style')).toContain('width: 25%')
    expect(w.get('.leased').attributes('style')).toContain('width: 10%')
    expect(w.get('[role="meter"]').attributes('aria-label')).toContain('Spent $0.25 of $1.00')
  })

  it('updates when spend changes', async () => {
    const w = mount(BudgetBar, { props: { projectId: 'p', limit: 1_000_000, spent: 0, leased: 0 } })
    await w.setProps({ spent: 500_000 })
    expect(w.get('[data-testid="budget-bar-p"]').attributes('data-spent-microdollars')).toBe('500000')
    expect(w.get('.spent').attributes('style')).toContain('width: 50%')
  })

  it('shows unlimited budgets', () => {
    const w = mount(BudgetBar, { props: { projectId: 'p', limit: null, spent: 10, leased: 0 } })
    expect(w.get('[data-testid="budget-limit"]').text()).toBe('unlimited')
    expect(w.get('[data-testid="budget-remaining"]').text()).toBe('unlimited')
  })
})
