/**
 * A strict JSON reader for log lines: RFC 8259 syntax, and an object with a repeated member name
 * is an error (RFC 8259 4: names SHOULD be unique; JSON.parse silently keeps the last one, which
 * is how repeated keys in log records go unnoticed). Returns the value; throws naming the key.
 */
export function parseStrictJson (text: string): unknown {
  let i = 0
  const fail = (why: string): never => { throw new SyntaxError(`${why} at offset ${i}: ${text.slice(Math.max(0, i - 30), i + 30)}`) }
  const ws = (): void => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++ }
  const string = (): string => {
    const start = i
    if (text[i] !== '"') fail('expected a string')
    i++
    while (i < text.length && text[i] !== '"') {
      if (text[i] === '\\') i++
      else if (text.charCodeAt(i) < 0x20) fail('control character in a string')
      i++
    }
    if (i >= text.length) fail('unterminated string')
    i++
    return JSON.parse(text.slice(start, i)) as string
  }
  const value = (depth: number): unknown => {
    if (depth > 64) fail('nested too deep')
    ws()
    const c = text[i]
    if (c === '{') {
      i++
      const out: Record<string, unknown> = {}
      const seen = new Set<string>()
      ws()
      if (text[i] === '}') { i++; return out }
      for (;;) {
        ws()
        const key = string()
        if (seen.has(key)) fail(`repeated key "${key}"`)
        seen.add(key)
        ws()
        if (text[i] !== ':') fail('expected ":"')
        i++
        out[key] = value(depth + 1)
        ws()
        if (text[i] === ',') { i++; continue }
        if (text[i] === '}') { i++; return out }
        fail('expected "," or "}"')
      }
    }
    if (c === '[') {
      i++
      const out: unknown[] = []
      ws()
      if (text[i] === ']') { i++; return out }
      for (;;) {
        out.push(value(depth + 1))
        ws()
        if (text[i] === ',') { i++; continue }
        if (text[i] === ']') { i++; return out }
        fail('expected "," or "]"')
      }
    }
    if (c === '"') return string()
    const literal = /^(true|false|null|-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?)/.exec(text.slice(i, i + 64))
    if (literal === null) fail('unexpected character')
    i += literal![0].length
    return JSON.parse(literal![0])
  }
  const result = value(0)
  ws()
  if (i !== text.length) fail('trailing characters')
  return result
}

/** Parses every non-empty line strictly; answers the records and the lines that failed, with why. */
export function parseLogLines (output: string): { records: Array<Record<string, unknown>>, bad: string[] } {
  const records: Array<Record<string, unknown>> = []
  const bad: string[] = []
  for (const line of output.split('\n')) {
    if (line.trim() === '') continue
    try {
      const record = parseStrictJson(line)
      if (record === null || typeof record !== 'object' || Array.isArray(record)) throw new SyntaxError('not an object')
      records.push(record as Record<string, unknown>)
    } catch (err) {
      bad.push(`${(err as Error).message}\n  line: ${line.slice(0, 300)}`)
    }
  }
  return { records, bad }
}
