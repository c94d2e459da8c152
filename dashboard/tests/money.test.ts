import { describe, expect, it } from 'vitest'
import { formatUsd, normalizeUsd, parseUsd } from '../src/api/money'

describe('money', () => {
  it('formats micro-dollars', () => {
    expect(formatUsd(0)).toBe('$0.00')
    expect(formatUsd(1_500_000)).toBe('$1.50')
    expect(formatUsd(123)).toBe('$0.000123')
    expect(formatUsd(1_234_567_890_000)).toBe('$1,234,567.89')
    expect(formatUsd(null)).toBe('unlimited')
  })

  it('parses typed USD amounts without floating point', () => {
    expect(parseUsd('1')).toBe(1_000_000)
    expect(parseUsd(' 0.1 ')).toBe(100_000)
    expect(parseUsd('0.000001')).toBe(1)
    expect(parseUsd('19.99')).toBe(19_990_000)
    expect(parseUsd('1.0000001')).toBeNull()
    expect(parseUsd('-1')).toBeNull()
    expect(parseUsd('abc')).toBeNull()
    expect(parseUsd('')).toBeNull()
    expect(normalizeUsd(' 2.5 ')).toBe('2.5')
    expect(normalizeUsd('2,5')).toBeNull()
  })
})
