// Umbrella header: everything a host program needs from the pygpt kernel library.
#pragma once

#include "pygpt/attention.h"
#include "pygpt/bpe.h"
#include "pygpt/adamw.h"
#include "pygpt/crossentropy.h"
#include "pygpt/dropout.h"
#include "pygpt/embedding.h"
#include "pygpt/gelu.h"
#include "pygpt/layernorm.h"
#include "pygpt/parallel.h"
#include "pygpt/version.h"
