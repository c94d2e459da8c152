// Money on the dashboard: the API reports integer micro-dollars (1 USD = 1,000,000) next to
// decimal USD strings. Arithmetic stays in integers; only display formats them.

export const MICROS_PER_USD = 1_000_000

/** `1500000` → `$1.50`, `123` → `$0.000123`, `null` → `unlimited`. */
export function formatUsd(micros: number | null | undefined): string {
  if (micros === null || micros === undefined) return 'unlimited'
  const neg = micros < 0
  const m = Math.abs(Math.round(micros))
  const whole = Math.floor(m / MICROS_PER_USD)
  let frac = String(m % MICROS_PER_USD).padStart(6, '0').replace(/0+$/, '')
  if (frac.length < 2) frac = frac.padEnd(2, '0')
  const grouped = whole.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',')
  return `${neg ? '-' : ''}$${grouped}.${frac}`
}

const USD_RE = /^(\d{1,10})(?:\.(\d{1,6}))?$/

/** Parses a user-typed USD amount (`12`, `12.5`, `0.000001`) to micro-dollars, or `null`. */
export function parseUsd(input: string): number | null {
  const m = USD_RE.exec(input.trim())
  if (!m) return null
  const whole = Number(m[1])
  const frac = Number((m[2] ?? '').padEnd(6, '0'))
  return whole * MICROS_PER_USD + frac
}

/** Decimal USD string (as the API takes it) from a user-typed amount, or `null` if invalid. */
export function normalizeUsd(input: string): string | null {
  return parseUsd(input) === null ? null : input.trim()
}

/** Axis label for a USD amount given as a float (charts only). */
export function formatUsdAxis(usd: number): string {
  return formatUsd(Math.round(usd * MICROS_PER_USD))
}
