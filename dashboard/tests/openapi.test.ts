// The client's endpoint table against control's OpenAPI document (dashboard/openapi.json,
// a snapshot of GET /openapi.json kept current by a Rust test). Run from dashboard/.
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { ENDPOINTS } from '../src/api/client'

const doc = JSON.parse(readFileSync(resolve(process.cwd(), 'openapi.json'), 'utf8')) as {
  paths: Record<string, Record<string, unknown>>
}

describe('openapi.json', () => {
  it.each(Object.entries(ENDPOINTS))('%s is in the document', (_name, ep) => {
    const item = doc.paths[ep.path]
    expect(item, `path ${ep.path} missing from openapi.json`).toBeDefined()
    expect(Object.keys(item ?? {}), `${ep.method} ${ep.path}`).toContain(ep.method.toLowerCase())
  })
})
