/** What the benchmarks read of a process from /proc (Linux; proc(5)). */
import { readFileSync, readdirSync } from 'node:fs'

/** USER_HZ: the unit of the CPU times in /proc/PID/stat. */
const CLOCK_TICKS = 100

export interface CpuSecondsOptions {
  /** Levels of live descendants to add (/proc/PID/task/PID/children): 0 the process alone, 1 its children, and so on. */
  levels?: number
  /** Also the CPU of children it has reaped (cutime + cstime). */
  reaped?: boolean
}

/** User + system CPU seconds `pid` has used so far, with its descendants as `o` says. Throws when `pid` is gone. */
export function cpuSeconds (pid: number, o: CpuSecondsOptions = {}): number {
  const levels = o.levels ?? 0
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The fields after the command name, which may hold spaces and parentheses: [11] utime, [12] stime, [13] cutime, [14] cstime.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  let ticks = Number(fields[11]) + Number(fields[12])
  if (o.reaped === true) ticks += Number(fields[13]) + Number(fields[14])
  let seconds = ticks / CLOCK_TICKS
  if (levels > 0) {
    let children: number[] = []
    try { children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number) } catch {}
    for (const child of children) {
      try { seconds += cpuSeconds(child, { ...o, levels: levels - 1 }) } catch { /* exited meanwhile */ }
    }
  }
  return seconds
}

/**
 * Seconds `pid`'s threads have spent runnable but waiting for a CPU (the run queue), so far, with
 * its descendants as `o.levels` says (/proc/PID/task/TID/schedstat, second field; needs
 * CONFIG_SCHED_INFO, else 0). On a shared machine this is what a one-threaded process loses to the
 * others: while its thread waits, every request it holds waits with it.
 */
export function runQueueSeconds (pid: number, o: CpuSecondsOptions = {}): number {
  const levels = o.levels ?? 0
  let ns = 0
  let tids: string[] = []
  try { tids = readdirSync(`/proc/${pid}/task`) } catch { return 0 }
  for (const tid of tids) {
    try { ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[1]) } catch { /* exited meanwhile */ }
  }
  let seconds = ns / 1e9
  if (levels > 0) {
    let children: number[] = []
    try { children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number) } catch {}
    for (const child of children) seconds += runQueueSeconds(child, { ...o, levels: levels - 1 })
  }
  return seconds
}
