import { flushPromises, mount } from '@vue/test-utils'
import { afterEach, describe, expect, it } from 'vitest'
import MintDialog from '../src/components/MintDialog.vue'
import { setFetch } from '../src/api/client'
import { mockApi } from './helpers'

afterEach(() => {
  setFetch(null)
  document.body.innerHTML = ''
})

const SECRET = 'ic_eyJhbGciOiJFZERTQSJ9.secret-payload.sig'

describe('MintDialog', () => {
  it('mints with the form values, shows the token once and forgets it on close', async () => {
    const calls = mockApi({
      'POST /v1/projects/prj_1/tokens': {
        status: 201,
        body: { id: 'tok_1', token: SECRET, project: 'prj_1', project_name: 'team-a', name: 'ci', expires_at: '2027-01-01T00:00:00Z' },
      },
    })
    const w = mount(MintDialog, { props: { projectId: 'prj_1', projectName: 'team-a' }, attachTo: document.body })
    expect(w.find('[data-testid="minted-token-value"]').exists()).toBe(false)
    await w.get('[data-testid="mint-name"]').setValue('ci')
    await w.get('[data-testid="mint-budget"]').setValue('2.50')
    await w.get('[data-testid="mint-ttl"]').setValue('7d')
    await w.get('form').trigger('submit')
    await flushPromises()

    expect(calls).toHaveLength(1)
    expect(calls[0]!.body).toEqual({ name: 'ci', budget_usd: '2.50', ttl: '7d' })
    const shown = w.get('[data-testid="minted-token-value"]').element as HTMLInputElement
    expect(shown.value).toBe(SECRET)
    expect(shown.readOnly).toBe(true)
    expect(w.emitted('minted')).toEqual([['tok_1']])

    await w.get('[data-testid="mint-done"]').trigger('click')
    expect(w.emitted('close')).toHaveLength(1)
    // Closing drops the token from the component state and the DOM.
    expect(w.html()).not.toContain(SECRET)
    expect(JSON.stringify((w.vm as unknown as { $: { setupState: Record<string, unknown> } }).$.setupState)).not.toContain(SECRET)
    w.unmount()
    expect(document.body.innerHTML).not.toContain(SECRET)
  })

  it('validates the budget before calling the API and shows API errors', async () => {
    const calls = mockApi({
      'POST /v1/projects/prj_1/tokens': {
        status: 400,
        body: { error: { type: 'invalid_request_error', message: 'ttl: expected a duration such as 7d', code: 'invalid_ttl' } },
      },
    })
    const w = mount(MintDialog, { props: { projectId: 'prj_1', projectName: 'team-a' }, attachTo: document.body })
    await w.get('[data-testid="mint-budget"]').setValue('lots')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(calls).toHaveLength(0)
    expect(w.get('[role="alert"]').text()).toContain('USD amount')

    await w.get('[data-testid="mint-budget"]').setValue('')
    await w.get('[data-testid="mint-ttl"]').setValue('forever')
    await w.get('form').trigger('submit')
    await flushPromises()
    expect(calls).toHaveLength(1)
    expect(w.get('[role="alert"]').text()).toBe('ttl: expected a duration such as 7d')
    expect(w.find('[data-testid="minted-token-value"]').exists()).toBe(false)
    w.unmount()
  })

  it('closes on Escape', async () => {
    mockApi({})
    const w = mount(MintDialog, { props: { projectId: 'prj_1', projectName: 'team-a' }, attachTo: document.body })
    await w.get('dialog').trigger('keydown', { key: 'Escape' })
    expect(w.emitted('close')).toHaveLength(1)
    w.unmount()
  })
})

describe('ModalDialog focus trap', () => {
  it('wraps Tab from the last control to the first and Shift+Tab back', async () => {
    mockApi({})
    const w = mount(MintDialog, { props: { projectId: 'prj_1', projectName: 'team-a' }, attachTo: document.body })
    await flushPromises()
    const dialog = w.get('dialog')
    const focusables = dialog.findAll('input, button')
    const first = focusables[0]!.element as HTMLElement
    const last = focusables[focusables.length - 1]!.element as HTMLElement
    expect(document.activeElement).toBe(first)
    last.focus()
    await dialog.trigger('keydown', { key: 'Tab' })
    expect(document.activeElement).toBe(first)
    await dialog.trigger('keydown', { key: 'Tab', shiftKey: true })
    expect(document.activeElement).toBe(last)
    expect(dialog.attributes('aria-labelledby')).toBe(dialog.get('h2').attributes('id'))
    w.unmount()
  })
})
