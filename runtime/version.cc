// SPDX-License-Identifier: Apache-2.0
#include "faultline/version.h"

namespace faultline {

const char* version() { return FAULTLINE_VERSION_STRING; }

}  // namespace faultline
