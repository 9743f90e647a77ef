/* leakprobe/python_frames.h — reads the calling thread's Python stack
 * straight from the interpreter's frames (CPython 3.11, 3.12, 3.13), for
 * hooks that may not call Python.
 *
 *   LeakprobeRawFrame frames[32];
 *   int n = LeakprobeCapturePythonFrames(frames, 32);
 *   LeakprobeResolvePythonFrame(&frames[0], &resolved);   // cold path
 *
 * Capture allocates nothing, changes no reference count and needs no GIL:
 * a thread's own frame chain only changes when that thread runs Python, and
 * it is inside our hook. Resolve reads immutable code-object fields
 * (filename, name, line table); call it only for a frame captured on this
 * thread a moment ago (its code object is alive while the frame is).
 * Thread-safety: both are reentrant. Compiled against the Python headers of
 * the interpreter being built for; this header is plain C. */
#ifndef LEAKPROBE_PYTHON_FRAMES_H_
#define LEAKPROBE_PYTHON_FRAMES_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One frame as captured: identifies code and position without resolving. */
/* NOLINTNEXTLINE(modernize-use-using): a C header */
typedef struct LeakprobeRawFrame {
  const void* code;     /* the PyCodeObject */
  const void* filename; /* its co_filename object: guards against address reuse */
  int32_t offset;       /* bytecode offset in bytes */
  int32_t first_line;   /* co_firstlineno: also a reuse guard */
} LeakprobeRawFrame;

/* NOLINTNEXTLINE(modernize-use-using): a C header */
typedef struct LeakprobeResolvedFrame {
  char filename[512]; /* UTF-8, truncated if longer */
  char function[256]; /* co_qualname, UTF-8 */
  int32_t line;       /* -1 when unknown */
} LeakprobeResolvedFrame;

/* Innermost first. Returns the number of frames written (0 for a thread
 * that has no Python thread state or no Python frames). */
int LeakprobeCapturePythonFrames(LeakprobeRawFrame* out, int max_frames);

/* As LeakprobeCapturePythonFrames, but only the frames of the running
 * asyncio task step, not the event loop's frames below it: inside
 * LeakprobeTaskStepBegin/End, the frames pushed since the step began (also
 * when the task's coroutine is compiled code without a frame of its own,
 * as uvloop's are); otherwise up to and including the outermost coroutine
 * or generator frame, or all frames when there is no such frame. */
int LeakprobeCaptureTaskFrames(LeakprobeRawFrame* out, int max_frames);

/* NOLINTNEXTLINE(modernize-use-using): a C header */
typedef struct LeakprobeTaskStep {
  const void* base; /* the frame current when the step began (may be NULL) */
  int active;
} LeakprobeTaskStep;

/* Around one step of a task's coroutine (GIL held; the async attribution's
 * coroutine wrapper): Begin marks this thread's current frame as the step's
 * base and returns the previous mark, which End restores (steps nest). */
LeakprobeTaskStep LeakprobeTaskStepBegin(void);
void LeakprobeTaskStepEnd(LeakprobeTaskStep previous);

/* As the two above, for a caller that holds the GIL (a Python-called
 * function; never a memory or fd hook, which may run on a thread that does
 * not): the thread state is read as the GIL holder's, without the
 * thread-specific-storage lookup. */
int LeakprobeCapturePythonFramesHeld(LeakprobeRawFrame* out, int max_frames);
int LeakprobeCaptureTaskFramesHeld(LeakprobeRawFrame* out, int max_frames);

/* Returns 0 on success. */
int LeakprobeResolvePythonFrame(const LeakprobeRawFrame* frame,
                                LeakprobeResolvedFrame* out);

#ifdef __cplusplus
}
#endif

#endif /* LEAKPROBE_PYTHON_FRAMES_H_ */
