// SPDX-License-Identifier: Apache-2.0
// Everything an application needs: the runtime, regions and the backends.
#pragma once

#include "faultline/backend.h"
#include "faultline/dirty_log.h"
#include "faultline/error.h"
#include "faultline/file_backend.h"
#include "faultline/memory_backend.h"
#include "faultline/log.h"
#include "faultline/options.h"
#include "faultline/region.h"
#include "faultline/runtime.h"
#include "faultline/stats.h"
#include "faultline/version.h"
#include "faultline/working_set.h"
