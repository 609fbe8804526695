// Umbrella header: everything a host program needs from the pygpt kernel library.
#pragma once

#include "pygpt/gelu.h"
#include "pygpt/parallel.h"
#include "pygpt/version.h"
