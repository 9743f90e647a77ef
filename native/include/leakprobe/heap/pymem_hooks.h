// The PEP 445 allocator hooks that feed HeapTracker, for the RAW, MEM and
// OBJ domains, each chained to the allocator installed before it (pymalloc,
// or tracemalloc or another tool's hooks).
//
//   InstallHeapHooks();   // with the GIL held; idempotent
//
// Thread-safety: install with the GIL held. The hooks themselves run on any
// thread (RAW without the GIL) and only call HeapTracker's hot path.
#pragma once

namespace leakprobe {

// Installs the hooks once; later calls do nothing.
void InstallHeapHooks();
// Installs them again on top of whatever is installed now. For when another
// tool removed them (tracemalloc.stop() restores the allocator it found).
void ReinstallHeapHooks();

}  // namespace leakprobe
