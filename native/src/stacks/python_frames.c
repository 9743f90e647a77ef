/* Frame walking per CPython version. Uses the interpreter's own internal
 * frame layout (Py_BUILD_CORE_MODULE), so each build matches the Python it
 * is built for. See python_frames.h for the rules. */
#define Py_BUILD_CORE_MODULE 1
#include <Python.h>

#include "internal/pycore_frame.h"
#include "leakprobe/stacks/python_frames.h"

#if PY_VERSION_HEX < 0x030B0000 || PY_VERSION_HEX >= 0x030E0000
#error "leakprobe's frame walker supports CPython 3.11, 3.12 and 3.13"
#endif

static _PyInterpreterFrame* CurrentFrame(PyThreadState* tstate) {
#if PY_VERSION_HEX >= 0x030D0000
  return tstate->current_frame;
#else
  return tstate->cframe != NULL ? tstate->cframe->current_frame : NULL;
#endif
}

static PyCodeObject* FrameCode(_PyInterpreterFrame* frame) {
#if PY_VERSION_HEX >= 0x030D0000
  PyObject* executable = frame->f_executable;
  if (executable == NULL || !PyCode_Check(executable)) return NULL;
  return (PyCodeObject*)executable;
#else
  return frame->f_code;
#endif
}

/* The walk of both captures, innermost first, up to (not including) `stop`
 * (NULL: every frame); *coroutine_end (if not NULL) gets the number of
 * frames up to and including the outermost generator-owned one, 0 if none. */
static int Walk(PyThreadState* tstate, LeakprobeRawFrame* out, int max_frames,
                const _PyInterpreterFrame* stop, int* coroutine_end) {
  if (tstate == NULL || max_frames <= 0) return 0;
  int n = 0;
  for (_PyInterpreterFrame* frame = CurrentFrame(tstate);
       frame != NULL && frame != stop && n < max_frames; frame = frame->previous) {
#if PY_VERSION_HEX >= 0x030C0000
    if (frame->owner == FRAME_OWNED_BY_CSTACK) continue; /* entry shims */
#endif
    PyCodeObject* code = FrameCode(frame);
    if (code == NULL || _PyFrame_IsIncomplete(frame)) continue;
    out[n].code = code;
    out[n].filename = code->co_filename;
    out[n].offset = _PyInterpreterFrame_LASTI(frame) * (int32_t)sizeof(_Py_CODEUNIT);
    out[n].first_line = code->co_firstlineno;
    ++n;
    if (coroutine_end != NULL && frame->owner == FRAME_OWNED_BY_GENERATOR) {
      *coroutine_end = n;
    }
  }
  return n;
}

/* The thread state bound to this OS thread, whether or not it holds the GIL
 * (a thread-specific-storage read). */
static PyThreadState* ThisThreadState(void) { return PyGILState_GetThisThreadState(); }

/* The thread state holding the GIL: this thread's when the caller holds it
 * (one load, where the thread-specific-storage read costs ~25
 * instructions). */
static PyThreadState* HolderThreadState(void) {
#if PY_VERSION_HEX >= 0x030D0000
  return PyThreadState_GetUnchecked();
#else
  return _PyThreadState_UncheckedGet();
#endif
}

/* The task step running on this thread (LeakprobeTaskStepBegin): the frame
 * that was current when it began, below which the frames are the event
 * loop's, not the task's. */
static __thread LeakprobeTaskStep tls_step __attribute__((tls_model("initial-exec")));

LeakprobeTaskStep LeakprobeTaskStepBegin(void) {
  const LeakprobeTaskStep previous = tls_step;
  tls_step.base = CurrentFrame(HolderThreadState());
  tls_step.active = 1;
  return previous;
}

void LeakprobeTaskStepEnd(LeakprobeTaskStep previous) { tls_step = previous; }

static int TaskFrames(PyThreadState* tstate, LeakprobeRawFrame* out, int max_frames) {
  if (tls_step.active) {  // exactly the frames the step pushed
    return Walk(tstate, out, max_frames, (const _PyInterpreterFrame*)tls_step.base, NULL);
  }
  int coroutine_end = 0;
  const int n = Walk(tstate, out, max_frames, NULL, &coroutine_end);
  return coroutine_end > 0 ? coroutine_end : n;
}

int LeakprobeCapturePythonFrames(LeakprobeRawFrame* out, int max_frames) {
  return Walk(ThisThreadState(), out, max_frames, NULL, NULL);
}

int LeakprobeCaptureTaskFrames(LeakprobeRawFrame* out, int max_frames) {
  return TaskFrames(ThisThreadState(), out, max_frames);
}

int LeakprobeCapturePythonFramesHeld(LeakprobeRawFrame* out, int max_frames) {
  return Walk(HolderThreadState(), out, max_frames, NULL, NULL);
}

int LeakprobeCaptureTaskFramesHeld(LeakprobeRawFrame* out, int max_frames) {
  return TaskFrames(HolderThreadState(), out, max_frames);
}

/* Copies a str object as UTF-8 into buf without calling into Python (no
 * PyUnicode_AsUTF8: it allocates, caches, and fails on lone surrogates).
 * Truncates at a character boundary. A surrogate that stands for a byte
 * (U+DC80..U+DCFF, from the file system's surrogateescape decoding) becomes
 * that byte again, as os.fsencode() does: the stack table then escapes it
 * like any invalid byte of a path (leakprobe/utf8.h). */
static void CopyUtf8(PyObject* text, char* buf, size_t cap) {
  size_t used = 0;
  if (text != NULL && PyUnicode_Check(text) && cap > 0) {
    const int kind = PyUnicode_KIND(text);
    const void* data = PyUnicode_DATA(text);
    const Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    for (Py_ssize_t i = 0; i < length; ++i) {
      const Py_UCS4 c = PyUnicode_READ(kind, data, i);
      char enc[4];
      size_t len = 0;
      if (c < 0x80) {
        enc[len++] = (char)c;
      } else if (c >= 0xDC80 && c <= 0xDCFF) {
        enc[len++] = (char)(c - 0xDC00);
      } else if (c < 0x800) {
        enc[len++] = (char)(0xC0 | (c >> 6));
        enc[len++] = (char)(0x80 | (c & 0x3F));
      } else if (c < 0x10000) {
        enc[len++] = (char)(0xE0 | (c >> 12));
        enc[len++] = (char)(0x80 | ((c >> 6) & 0x3F));
        enc[len++] = (char)(0x80 | (c & 0x3F));
      } else {
        enc[len++] = (char)(0xF0 | (c >> 18));
        enc[len++] = (char)(0x80 | ((c >> 12) & 0x3F));
        enc[len++] = (char)(0x80 | ((c >> 6) & 0x3F));
        enc[len++] = (char)(0x80 | (c & 0x3F));
      }
      if (used + len + 1 > cap) break;
      for (size_t j = 0; j < len; ++j) buf[used++] = enc[j];
    }
  }
  if (cap > 0) buf[used] = '\0';
}

int LeakprobeResolvePythonFrame(const LeakprobeRawFrame* frame,
                                LeakprobeResolvedFrame* out) {
  PyCodeObject* code = (PyCodeObject*)frame->code;
  if (code == NULL) return -1;
  CopyUtf8(code->co_filename, out->filename, sizeof out->filename);
  CopyUtf8(code->co_qualname, out->function, sizeof out->function);
  out->line = PyCode_Addr2Line(code, frame->offset);
  return 0;
}
