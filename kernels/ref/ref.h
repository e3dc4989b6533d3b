/*
 * ref.h: internal helper of kernels/ref/, not a public header. Each reference kernel is written
 * once over the scalar type NK_REAL and compiled twice: as the float specification declared in
 * kernels/nk.h, and (Makefile rule $(BUILD)/ref64/%.o: -DNK_REAL=double -DNK_REF_SUFFIX=_f64) as
 * a double twin named with NK_REF(), used by the gradient checks in tests/test_grad.c. The twins'
 * prototypes are in tests/ref64.h.
 */
#ifndef NK_REF_H
#define NK_REF_H

#include <math.h>
#include <stdint.h>

// Float builds: nk.h declares every *_ref function, so the compiler checks each definition
// against its prototype. Double builds still need nk_conv_desc, nk_u01 and NK_BCE_EPS from it.
#include "kernels/nk.h"

#if defined(NK_REAL) != defined(NK_REF_SUFFIX)
#    error "define both NK_REAL and NK_REF_SUFFIX (double twin) or neither (float reference)"
#endif

#ifndef NK_REAL
#    define NK_REAL float
#endif
#ifndef NK_REF_SUFFIX
#    define NK_REF_SUFFIX
#endif

// NK_REF(nk_relu_fwd_ref) is nk_relu_fwd_ref in float builds and nk_relu_fwd_ref_f64 in the
// double twin. Two levels so that NK_REF_SUFFIX is expanded before it is pasted.
#define NK_CAT_(a, b) a##b
#define NK_CAT(a, b)  NK_CAT_(a, b)
#define NK_REF(name)  NK_CAT(name, NK_REF_SUFFIX)

#endif
