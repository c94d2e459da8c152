// The client's endpoint table against control's OpenAPI document (dashboard/openapi.json,
// a snapshot of GET /openapi.json kept current by a Rust test). Run from dashboard/.
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ENDPOINTS } from '../src/api/client'

interface Operation {
  parameters?: { name: string; in: string }[]
}
const doc = JSON.parse(readFileSync(resolve(process.cwd(), 'openapi.json'), 'utf8')) as {
  paths: Record<string, Record<string, Operation>>
}

describe('openapi.json', () => {
  it.each(Object.entries(ENDPOINTS))('%s is in the document', (_name, ep) => {
    const item = doc.paths[ep.path]
    expect(item, `path ${ep.path} missing from openapi.json`).toBeDefined()
    expect(Object.keys(item ?? {}), `${ep.method} ${ep.path}`).toContain(ep.method.toLowerCase())
    const op = item?.[ep.method.toLowerCase()]
    const documented = (op?.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name)
    const declared: readonly string[] = 'query' in ep ? ep.query : []
    for (const q of declared) expect(documented, `${ep.method} ${ep.path} ?${q}`).toContain(q)
    // Path parameters are named as in the document.
    const names = [...ep.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1])
    const pathParams = (op?.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name)
    expect(pathParams.sort()).toEqual(names.sort())
  })
})
