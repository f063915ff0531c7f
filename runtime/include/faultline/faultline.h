// SPDX-License-Identifier: Apache-2.0
// Everything an application needs: the runtime, regions, the backends,
// snapshots, the page server, warnings and the version. Every public header
// is here (README.md's snippets include only this one; tests/install/check.sh
// fails if one is missing).
#pragma once

#include "faultline/backend.h"
#include "faultline/dirty_log.h"
#include "faultline/error.h"
#include "faultline/file_backend.h"
#include "faultline/foreign.h"
#include "faultline/http_backend.h"
#include "faultline/live_snapshot.h"
#include "faultline/log.h"
#include "faultline/memory_backend.h"
#include "faultline/migration.h"
#include "faultline/options.h"
#include "faultline/page_server.h"
#include "faultline/region.h"
#include "faultline/remote_backend.h"
#include "faultline/runtime.h"
#include "faultline/snapshot.h"
#include "faultline/stats.h"
#include "faultline/version.h"
#include "faultline/working_set.h"
#include "faultline/zstd_snapshot_backend.h"
