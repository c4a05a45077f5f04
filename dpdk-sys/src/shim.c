#include "../wrapper.h"

int ferrovn_rte_errno(void) { return rte_errno; }
