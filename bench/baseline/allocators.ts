/**
 * Memory allocators a bench can give a process it starts, by name: the environment that selects
 * each (LD_PRELOAD of Debian's libjemalloc2, libtcmalloc-minimal4 and libmimalloc2.0, or glibc's
 * own tunables). `jemalloc` returns freed pages within about a second (a background thread);
 * `jemalloc-default` keeps them for its default 10 s and purges only when it allocates.
 */
const LIB = '/usr/lib/x86_64-linux-gnu'

export const ALLOCATORS = {
  glibc: {},
  'glibc-arenas-2': { MALLOC_ARENA_MAX: '2' },
  jemalloc: { LD_PRELOAD: `${LIB}/libjemalloc.so.2`, MALLOC_CONF: 'background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0' },
  'jemalloc-default': { LD_PRELOAD: `${LIB}/libjemalloc.so.2` },
  tcmalloc: { LD_PRELOAD: `${LIB}/libtcmalloc_minimal.so.4` },
  mimalloc: { LD_PRELOAD: `${LIB}/libmimalloc.so.2` },
} as const satisfies Record<string, Record<string, string>>

export type Allocator = keyof typeof ALLOCATORS
export const ALLOCATOR_NAMES = Object.keys(ALLOCATORS) as Allocator[]

export function isAllocator (name: string): name is Allocator {
  return Object.hasOwn(ALLOCATORS, name)
}
