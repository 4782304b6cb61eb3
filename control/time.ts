/** Timestamps on the wire: RFC 3339 UTC to the second, as in the spec ("2025-11-29T12:00:00Z"). */
export function isoSeconds (value: Date | string | number): string {
  return new Date(value).toISOString().replace(/\.\d{3}Z$/, 'Z')
}
