/* Everything FerrOVN binds from DPDK 22.11. rte_config.h comes in through
 * `pkg-config --cflags libdpdk` (-include rte_config.h). */
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_bus_vdev.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_vhost.h>

/* rte_errno is a thread-local (per_lcore__rte_errno): no stable FFI symbol, so a C shim reads it. */
int ferrovn_rte_errno(void);
