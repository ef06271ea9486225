// convpool._C's direct entry points to the ops (direct_calls.cpp); ops.cpp adds them to the module.
#pragma once

#include <Python.h>

namespace convpool {
PyMethodDef* direct_call_methods();  // null-terminated
}
