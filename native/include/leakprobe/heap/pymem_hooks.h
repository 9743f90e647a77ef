// The PEP 445 allocator hooks that feed HeapTracker, for the RAW, MEM and
// OBJ domains, each chained to the allocator installed before it (pymalloc,
// or tracemalloc or another tool's hooks).
//
//   InstallHeapHooks();   // with the GIL held; idempotent
//   RestackHeapHooks();   // after another tool changed the allocators
//
// Thread-safety: install with the GIL held. The hooks themselves run on any
// thread (RAW without the GIL) and only call HeapTracker's hot path.
#pragma once

namespace leakprobe {

// Installs the hooks once; later calls do nothing.
void InstallHeapHooks();
// Keeps exactly one layer of our hooks recording, on top: when another
// tool's hooks (tracemalloc's) were installed over ours, installs ours again
// over theirs and makes the layer below forward only (else the other tool's
// own allocations, made through the allocator it found, would count as the
// application's); when the other tool removed ours (tracemalloc.stop()
// restores the allocator it found), installs ours again; when its stop put
// one of our forwarding layers back on top, makes that one record again.
// Returns the number of domains where hooks were installed anew. GIL held.
int RestackHeapHooks();

// While native tracking runs (leakprobe/malloc/): the RAW hooks mark the
// thread (ThreadSampler::nesting) around their call to the real allocator,
// which ends in malloc, often by tail calls that leave the extension that
// called PyMem_RawMalloc as malloc's apparent caller. The malloc hooks then
// leave the block to the Python heap. Off, the RAW hooks keep their tail
// calls. Any thread.
void MarkRawAllocatorCalls(bool on) noexcept;

}  // namespace leakprobe
