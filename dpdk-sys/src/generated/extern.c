#include "wrapper.h"

// Static wrappers

void rte_uuid_copy__extern(rte_uuid_t dst, const rte_uuid_t src) { rte_uuid_copy(dst, src); }
int rte_gettid__extern(void) { return rte_gettid(); }
unsigned int rte_lcore_id__extern(void) { return rte_lcore_id(); }
int rte_is_aligned__extern(const const void *const ptr, const unsigned int align) { return rte_is_aligned(ptr, align); }
uint32_t rte_combine32ms1b__extern(uint32_t x) { return rte_combine32ms1b(x); }
uint64_t rte_combine64ms1b__extern(uint64_t v) { return rte_combine64ms1b(v); }
int rte_is_power_of_2__extern(uint32_t n) { return rte_is_power_of_2(n); }
uint32_t rte_align32pow2__extern(uint32_t x) { return rte_align32pow2(x); }
uint32_t rte_align32prevpow2__extern(uint32_t x) { return rte_align32prevpow2(x); }
uint64_t rte_align64pow2__extern(uint64_t v) { return rte_align64pow2(v); }
uint64_t rte_align64prevpow2__extern(uint64_t v) { return rte_align64prevpow2(v); }
uint32_t rte_bsf32__extern(uint32_t v) { return rte_bsf32(v); }
int rte_bsf32_safe__extern(uint32_t v, uint32_t *pos) { return rte_bsf32_safe(v, pos); }
uint32_t rte_log2_u32__extern(uint32_t v) { return rte_log2_u32(v); }
uint32_t rte_fls_u32__extern(uint32_t x) { return rte_fls_u32(x); }
uint32_t rte_bsf64__extern(uint64_t v) { return rte_bsf64(v); }
int rte_bsf64_safe__extern(uint64_t v, uint32_t *pos) { return rte_bsf64_safe(v, pos); }
uint32_t rte_fls_u64__extern(uint64_t x) { return rte_fls_u64(x); }
uint32_t rte_log2_u64__extern(uint64_t v) { return rte_log2_u64(v); }
void rte_atomic_thread_fence__extern(int memorder) { rte_atomic_thread_fence(memorder); }
int rte_atomic16_cmpset__extern(uint16_t *dst, uint16_t exp, uint16_t src) { return rte_atomic16_cmpset(dst, exp, src); }
uint16_t rte_atomic16_exchange__extern(uint16_t *dst, uint16_t val) { return rte_atomic16_exchange(dst, val); }
void rte_atomic16_init__extern(rte_atomic16_t *v) { rte_atomic16_init(v); }
int16_t rte_atomic16_read__extern(const rte_atomic16_t *v) { return rte_atomic16_read(v); }
void rte_atomic16_set__extern(rte_atomic16_t *v, int16_t new_value) { rte_atomic16_set(v, new_value); }
void rte_atomic16_add__extern(rte_atomic16_t *v, int16_t inc) { rte_atomic16_add(v, inc); }
void rte_atomic16_sub__extern(rte_atomic16_t *v, int16_t dec) { rte_atomic16_sub(v, dec); }
void rte_atomic16_inc__extern(rte_atomic16_t *v) { rte_atomic16_inc(v); }
void rte_atomic16_dec__extern(rte_atomic16_t *v) { rte_atomic16_dec(v); }
int16_t rte_atomic16_add_return__extern(rte_atomic16_t *v, int16_t inc) { return rte_atomic16_add_return(v, inc); }
int16_t rte_atomic16_sub_return__extern(rte_atomic16_t *v, int16_t dec) { return rte_atomic16_sub_return(v, dec); }
int rte_atomic16_inc_and_test__extern(rte_atomic16_t *v) { return rte_atomic16_inc_and_test(v); }
int rte_atomic16_dec_and_test__extern(rte_atomic16_t *v) { return rte_atomic16_dec_and_test(v); }
int rte_atomic16_test_and_set__extern(rte_atomic16_t *v) { return rte_atomic16_test_and_set(v); }
void rte_atomic16_clear__extern(rte_atomic16_t *v) { rte_atomic16_clear(v); }
int rte_atomic32_cmpset__extern(uint32_t *dst, uint32_t exp, uint32_t src) { return rte_atomic32_cmpset(dst, exp, src); }
uint32_t rte_atomic32_exchange__extern(uint32_t *dst, uint32_t val) { return rte_atomic32_exchange(dst, val); }
void rte_atomic32_init__extern(rte_atomic32_t *v) { rte_atomic32_init(v); }
int32_t rte_atomic32_read__extern(const rte_atomic32_t *v) { return rte_atomic32_read(v); }
void rte_atomic32_set__extern(rte_atomic32_t *v, int32_t new_value) { rte_atomic32_set(v, new_value); }
void rte_atomic32_add__extern(rte_atomic32_t *v, int32_t inc) { rte_atomic32_add(v, inc); }
void rte_atomic32_sub__extern(rte_atomic32_t *v, int32_t dec) { rte_atomic32_sub(v, dec); }
void rte_atomic32_inc__extern(rte_atomic32_t *v) { rte_atomic32_inc(v); }
void rte_atomic32_dec__extern(rte_atomic32_t *v) { rte_atomic32_dec(v); }
int32_t rte_atomic32_add_return__extern(rte_atomic32_t *v, int32_t inc) { return rte_atomic32_add_return(v, inc); }
int32_t rte_atomic32_sub_return__extern(rte_atomic32_t *v, int32_t dec) { return rte_atomic32_sub_return(v, dec); }
int rte_atomic32_inc_and_test__extern(rte_atomic32_t *v) { return rte_atomic32_inc_and_test(v); }
int rte_atomic32_dec_and_test__extern(rte_atomic32_t *v) { return rte_atomic32_dec_and_test(v); }
int rte_atomic32_test_and_set__extern(rte_atomic32_t *v) { return rte_atomic32_test_and_set(v); }
void rte_atomic32_clear__extern(rte_atomic32_t *v) { rte_atomic32_clear(v); }
int rte_atomic64_cmpset__extern(uint64_t *dst, uint64_t exp, uint64_t src) { return rte_atomic64_cmpset(dst, exp, src); }
uint64_t rte_atomic64_exchange__extern(uint64_t *dst, uint64_t val) { return rte_atomic64_exchange(dst, val); }
void rte_atomic64_init__extern(rte_atomic64_t *v) { rte_atomic64_init(v); }
int64_t rte_atomic64_read__extern(rte_atomic64_t *v) { return rte_atomic64_read(v); }
void rte_atomic64_set__extern(rte_atomic64_t *v, int64_t new_value) { rte_atomic64_set(v, new_value); }
void rte_atomic64_add__extern(rte_atomic64_t *v, int64_t inc) { rte_atomic64_add(v, inc); }
void rte_atomic64_sub__extern(rte_atomic64_t *v, int64_t dec) { rte_atomic64_sub(v, dec); }
void rte_atomic64_inc__extern(rte_atomic64_t *v) { rte_atomic64_inc(v); }
void rte_atomic64_dec__extern(rte_atomic64_t *v) { rte_atomic64_dec(v); }
int64_t rte_atomic64_add_return__extern(rte_atomic64_t *v, int64_t inc) { return rte_atomic64_add_return(v, inc); }
int64_t rte_atomic64_sub_return__extern(rte_atomic64_t *v, int64_t dec) { return rte_atomic64_sub_return(v, dec); }
int rte_atomic64_inc_and_test__extern(rte_atomic64_t *v) { return rte_atomic64_inc_and_test(v); }
int rte_atomic64_dec_and_test__extern(rte_atomic64_t *v) { return rte_atomic64_dec_and_test(v); }
int rte_atomic64_test_and_set__extern(rte_atomic64_t *v) { return rte_atomic64_test_and_set(v); }
void rte_atomic64_clear__extern(rte_atomic64_t *v) { rte_atomic64_clear(v); }
void rte_smp_mb__extern(void) { rte_smp_mb(); }
int rte_atomic128_cmp_exchange__extern(rte_int128_t *dst, rte_int128_t *exp, const rte_int128_t *src, unsigned int weak, int success, int failure) { return rte_atomic128_cmp_exchange(dst, exp, src, weak, success, failure); }
uint64_t rte_get_tsc_cycles__extern(void) { return rte_get_tsc_cycles(); }
uint64_t rte_get_timer_cycles__extern(void) { return rte_get_timer_cycles(); }
uint64_t rte_get_timer_hz__extern(void) { return rte_get_timer_hz(); }
void rte_delay_ms__extern(unsigned int ms) { rte_delay_ms(ms); }
uint64_t rte_rdtsc__extern(void) { return rte_rdtsc(); }
uint64_t rte_rdtsc_precise__extern(void) { return rte_rdtsc_precise(); }
void rte_pause__extern(void) { rte_pause(); }
void rte_wait_until_equal_16__extern(uint16_t *addr, uint16_t expected, int memorder) { rte_wait_until_equal_16(addr, expected, memorder); }
void rte_wait_until_equal_32__extern(uint32_t *addr, uint32_t expected, int memorder) { rte_wait_until_equal_32(addr, expected, memorder); }
void rte_wait_until_equal_64__extern(uint64_t *addr, uint64_t expected, int memorder) { rte_wait_until_equal_64(addr, expected, memorder); }
void rte_spinlock_init__extern(rte_spinlock_t *sl) { rte_spinlock_init(sl); }
void rte_spinlock_lock__extern(rte_spinlock_t *sl) { rte_spinlock_lock(sl); }
void rte_spinlock_unlock__extern(rte_spinlock_t *sl) { rte_spinlock_unlock(sl); }
int rte_spinlock_trylock__extern(rte_spinlock_t *sl) { return rte_spinlock_trylock(sl); }
int rte_spinlock_is_locked__extern(rte_spinlock_t *sl) { return rte_spinlock_is_locked(sl); }
int rte_tm_supported__extern(void) { return rte_tm_supported(); }
void rte_spinlock_lock_tm__extern(rte_spinlock_t *sl) { rte_spinlock_lock_tm(sl); }
void rte_spinlock_unlock_tm__extern(rte_spinlock_t *sl) { rte_spinlock_unlock_tm(sl); }
int rte_spinlock_trylock_tm__extern(rte_spinlock_t *sl) { return rte_spinlock_trylock_tm(sl); }
void rte_spinlock_recursive_init__extern(rte_spinlock_recursive_t *slr) { rte_spinlock_recursive_init(slr); }
void rte_spinlock_recursive_lock__extern(rte_spinlock_recursive_t *slr) { rte_spinlock_recursive_lock(slr); }
void rte_spinlock_recursive_unlock__extern(rte_spinlock_recursive_t *slr) { rte_spinlock_recursive_unlock(slr); }
int rte_spinlock_recursive_trylock__extern(rte_spinlock_recursive_t *slr) { return rte_spinlock_recursive_trylock(slr); }
void rte_spinlock_recursive_lock_tm__extern(rte_spinlock_recursive_t *slr) { rte_spinlock_recursive_lock_tm(slr); }
void rte_spinlock_recursive_unlock_tm__extern(rte_spinlock_recursive_t *slr) { rte_spinlock_recursive_unlock_tm(slr); }
int rte_spinlock_recursive_trylock_tm__extern(rte_spinlock_recursive_t *slr) { return rte_spinlock_recursive_trylock_tm(slr); }
unsigned int rte_xbegin__extern(void) { return rte_xbegin(); }
void rte_xend__extern(void) { rte_xend(); }
int rte_xtest__extern(void) { return rte_xtest(); }
int rte_try_tm__extern(int *lock) { return rte_try_tm(lock); }
uint32_t rte_bit_relaxed_get32__extern(unsigned int nr, uint32_t *addr) { return rte_bit_relaxed_get32(nr, addr); }
void rte_bit_relaxed_set32__extern(unsigned int nr, uint32_t *addr) { rte_bit_relaxed_set32(nr, addr); }
void rte_bit_relaxed_clear32__extern(unsigned int nr, uint32_t *addr) { rte_bit_relaxed_clear32(nr, addr); }
uint32_t rte_bit_relaxed_test_and_set32__extern(unsigned int nr, uint32_t *addr) { return rte_bit_relaxed_test_and_set32(nr, addr); }
uint32_t rte_bit_relaxed_test_and_clear32__extern(unsigned int nr, uint32_t *addr) { return rte_bit_relaxed_test_and_clear32(nr, addr); }
uint64_t rte_bit_relaxed_get64__extern(unsigned int nr, uint64_t *addr) { return rte_bit_relaxed_get64(nr, addr); }
void rte_bit_relaxed_set64__extern(unsigned int nr, uint64_t *addr) { rte_bit_relaxed_set64(nr, addr); }
void rte_bit_relaxed_clear64__extern(unsigned int nr, uint64_t *addr) { rte_bit_relaxed_clear64(nr, addr); }
uint64_t rte_bit_relaxed_test_and_set64__extern(unsigned int nr, uint64_t *addr) { return rte_bit_relaxed_test_and_set64(nr, addr); }
uint64_t rte_bit_relaxed_test_and_clear64__extern(unsigned int nr, uint64_t *addr) { return rte_bit_relaxed_test_and_clear64(nr, addr); }
void rte_rwlock_init__extern(rte_rwlock_t *rwl) { rte_rwlock_init(rwl); }
void rte_rwlock_read_lock__extern(rte_rwlock_t *rwl) { rte_rwlock_read_lock(rwl); }
int rte_rwlock_read_trylock__extern(rte_rwlock_t *rwl) { return rte_rwlock_read_trylock(rwl); }
void rte_rwlock_read_unlock__extern(rte_rwlock_t *rwl) { rte_rwlock_read_unlock(rwl); }
int rte_rwlock_write_trylock__extern(rte_rwlock_t *rwl) { return rte_rwlock_write_trylock(rwl); }
void rte_rwlock_write_lock__extern(rte_rwlock_t *rwl) { rte_rwlock_write_lock(rwl); }
void rte_rwlock_write_unlock__extern(rte_rwlock_t *rwl) { rte_rwlock_write_unlock(rwl); }
void rte_rwlock_read_lock_tm__extern(rte_rwlock_t *rwl) { rte_rwlock_read_lock_tm(rwl); }
void rte_rwlock_read_unlock_tm__extern(rte_rwlock_t *rwl) { rte_rwlock_read_unlock_tm(rwl); }
void rte_rwlock_write_lock_tm__extern(rte_rwlock_t *rwl) { rte_rwlock_write_lock_tm(rwl); }
void rte_rwlock_write_unlock_tm__extern(rte_rwlock_t *rwl) { rte_rwlock_write_unlock_tm(rwl); }
unsigned int rte_ring_mp_enqueue_bulk_elem__extern(struct rte_ring *r, const void *obj_table, unsigned int esize, unsigned int n, unsigned int *free_space) { return rte_ring_mp_enqueue_bulk_elem(r, obj_table, esize, n, free_space); }
unsigned int rte_ring_sp_enqueue_bulk_elem__extern(struct rte_ring *r, const void *obj_table, unsigned int esize, unsigned int n, unsigned int *free_space) { return rte_ring_sp_enqueue_bulk_elem(r, obj_table, esize, n, free_space); }
unsigned int rte_ring_mp_hts_enqueue_bulk_elem__extern(struct rte_ring *r, const void *obj_table, unsigned int esize, unsigned int n, unsigned int *free_space) { return rte_ring_mp_hts_enqueue_bulk_elem(r, obj_table, esize, n, free_space); }
unsigned int rte_ring_mc_hts_dequeue_bulk_elem__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_mc_hts_dequeue_bulk_elem(r, obj_table, esize, n, available); }
unsigned int rte_ring_mp_hts_enqueue_burst_elem__extern(struct rte_ring *r, const void *obj_table, unsigned int esize, unsigned int n, unsigned int *free_space) { return rte_ring_mp_hts_enqueue_burst_elem(r, obj_table, esize, n, free_space); }
unsigned int rte_ring_mc_hts_dequeue_burst_elem__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_mc_hts_dequeue_burst_elem(r, obj_table, esize, n, available); }
unsigned int rte_ring_mp_hts_enqueue_bulk__extern(struct rte_ring *r, void *const *obj_table, unsigned int n, unsigned int *free_space) { return rte_ring_mp_hts_enqueue_bulk(r, obj_table, n, free_space); }
unsigned int rte_ring_mc_hts_dequeue_bulk__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_mc_hts_dequeue_bulk(r, obj_table, n, available); }
unsigned int rte_ring_mp_hts_enqueue_burst__extern(struct rte_ring *r, void *const *obj_table, unsigned int n, unsigned int *free_space) { return rte_ring_mp_hts_enqueue_burst(r, obj_table, n, free_space); }
unsigned int rte_ring_mc_hts_dequeue_burst__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_mc_hts_dequeue_burst(r, obj_table, n, available); }
unsigned int rte_ring_mp_rts_enqueue_bulk_elem__extern(struct rte_ring *r, const void *obj_table, unsigned int esize, unsigned int n, unsigned int *free_space) { return rte_ring_mp_rts_enqueue_bulk_elem(r, obj_table, esize, n, free_space); }
unsigned int rte_ring_mc_rts_dequeue_bulk_elem__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_mc_rts_dequeue_bulk_elem(r, obj_table, esize, n, available); }
unsigned int rte_ring_mp_rts_enqueue_burst_elem__extern(struct rte_ring *r, const void *obj_table, unsigned int esize, unsigned int n, unsigned int *free_space) { return rte_ring_mp_rts_enqueue_burst_elem(r, obj_table, esize, n, free_space); }
unsigned int rte_ring_mc_rts_dequeue_burst_elem__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_mc_rts_dequeue_burst_elem(r, obj_table, esize, n, available); }
unsigned int rte_ring_mp_rts_enqueue_bulk__extern(struct rte_ring *r, void *const *obj_table, unsigned int n, unsigned int *free_space) { return rte_ring_mp_rts_enqueue_bulk(r, obj_table, n, free_space); }
unsigned int rte_ring_mc_rts_dequeue_bulk__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_mc_rts_dequeue_bulk(r, obj_table, n, available); }
unsigned int rte_ring_mp_rts_enqueue_burst__extern(struct rte_ring *r, void *const *obj_table, unsigned int n, unsigned int *free_space) { return rte_ring_mp_rts_enqueue_burst(r, obj_table, n, free_space); }
unsigned int rte_ring_mc_rts_dequeue_burst__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_mc_rts_dequeue_burst(r, obj_table, n, available); }
uint32_t rte_ring_get_prod_htd_max__extern(const struct rte_ring *r) { return rte_ring_get_prod_htd_max(r); }
int rte_ring_set_prod_htd_max__extern(struct rte_ring *r, uint32_t v) { return rte_ring_set_prod_htd_max(r, v); }
uint32_t rte_ring_get_cons_htd_max__extern(const struct rte_ring *r) { return rte_ring_get_cons_htd_max(r); }
int rte_ring_set_cons_htd_max__extern(struct rte_ring *r, uint32_t v) { return rte_ring_set_cons_htd_max(r, v); }
unsigned int rte_ring_enqueue_bulk_elem__extern(struct rte_ring *r, const void *obj_table, unsigned int esize, unsigned int n, unsigned int *free_space) { return rte_ring_enqueue_bulk_elem(r, obj_table, esize, n, free_space); }
int rte_ring_mp_enqueue_elem__extern(struct rte_ring *r, void *obj, unsigned int esize) { return rte_ring_mp_enqueue_elem(r, obj, esize); }
int rte_ring_sp_enqueue_elem__extern(struct rte_ring *r, void *obj, unsigned int esize) { return rte_ring_sp_enqueue_elem(r, obj, esize); }
int rte_ring_enqueue_elem__extern(struct rte_ring *r, void *obj, unsigned int esize) { return rte_ring_enqueue_elem(r, obj, esize); }
unsigned int rte_ring_mc_dequeue_bulk_elem__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_mc_dequeue_bulk_elem(r, obj_table, esize, n, available); }
unsigned int rte_ring_sc_dequeue_bulk_elem__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_sc_dequeue_bulk_elem(r, obj_table, esize, n, available); }
unsigned int rte_ring_dequeue_bulk_elem__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_dequeue_bulk_elem(r, obj_table, esize, n, available); }
int rte_ring_mc_dequeue_elem__extern(struct rte_ring *r, void *obj_p, unsigned int esize) { return rte_ring_mc_dequeue_elem(r, obj_p, esize); }
int rte_ring_sc_dequeue_elem__extern(struct rte_ring *r, void *obj_p, unsigned int esize) { return rte_ring_sc_dequeue_elem(r, obj_p, esize); }
int rte_ring_dequeue_elem__extern(struct rte_ring *r, void *obj_p, unsigned int esize) { return rte_ring_dequeue_elem(r, obj_p, esize); }
unsigned int rte_ring_mp_enqueue_burst_elem__extern(struct rte_ring *r, const void *obj_table, unsigned int esize, unsigned int n, unsigned int *free_space) { return rte_ring_mp_enqueue_burst_elem(r, obj_table, esize, n, free_space); }
unsigned int rte_ring_sp_enqueue_burst_elem__extern(struct rte_ring *r, const void *obj_table, unsigned int esize, unsigned int n, unsigned int *free_space) { return rte_ring_sp_enqueue_burst_elem(r, obj_table, esize, n, free_space); }
unsigned int rte_ring_enqueue_burst_elem__extern(struct rte_ring *r, const void *obj_table, unsigned int esize, unsigned int n, unsigned int *free_space) { return rte_ring_enqueue_burst_elem(r, obj_table, esize, n, free_space); }
unsigned int rte_ring_mc_dequeue_burst_elem__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_mc_dequeue_burst_elem(r, obj_table, esize, n, available); }
unsigned int rte_ring_sc_dequeue_burst_elem__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_sc_dequeue_burst_elem(r, obj_table, esize, n, available); }
unsigned int rte_ring_dequeue_burst_elem__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_dequeue_burst_elem(r, obj_table, esize, n, available); }
unsigned int rte_ring_enqueue_bulk_elem_start__extern(struct rte_ring *r, unsigned int n, unsigned int *free_space) { return rte_ring_enqueue_bulk_elem_start(r, n, free_space); }
unsigned int rte_ring_enqueue_bulk_start__extern(struct rte_ring *r, unsigned int n, unsigned int *free_space) { return rte_ring_enqueue_bulk_start(r, n, free_space); }
unsigned int rte_ring_enqueue_burst_elem_start__extern(struct rte_ring *r, unsigned int n, unsigned int *free_space) { return rte_ring_enqueue_burst_elem_start(r, n, free_space); }
unsigned int rte_ring_enqueue_burst_start__extern(struct rte_ring *r, unsigned int n, unsigned int *free_space) { return rte_ring_enqueue_burst_start(r, n, free_space); }
void rte_ring_enqueue_elem_finish__extern(struct rte_ring *r, const void *obj_table, unsigned int esize, unsigned int n) { rte_ring_enqueue_elem_finish(r, obj_table, esize, n); }
void rte_ring_enqueue_finish__extern(struct rte_ring *r, void *const *obj_table, unsigned int n) { rte_ring_enqueue_finish(r, obj_table, n); }
unsigned int rte_ring_dequeue_bulk_elem_start__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_dequeue_bulk_elem_start(r, obj_table, esize, n, available); }
unsigned int rte_ring_dequeue_bulk_start__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_dequeue_bulk_start(r, obj_table, n, available); }
unsigned int rte_ring_dequeue_burst_elem_start__extern(struct rte_ring *r, void *obj_table, unsigned int esize, unsigned int n, unsigned int *available) { return rte_ring_dequeue_burst_elem_start(r, obj_table, esize, n, available); }
unsigned int rte_ring_dequeue_burst_start__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_dequeue_burst_start(r, obj_table, n, available); }
void rte_ring_dequeue_elem_finish__extern(struct rte_ring *r, unsigned int n) { rte_ring_dequeue_elem_finish(r, n); }
void rte_ring_dequeue_finish__extern(struct rte_ring *r, unsigned int n) { rte_ring_dequeue_finish(r, n); }
unsigned int rte_ring_enqueue_zc_bulk_elem_start__extern(struct rte_ring *r, unsigned int esize, unsigned int n, struct rte_ring_zc_data *zcd, unsigned int *free_space) { return rte_ring_enqueue_zc_bulk_elem_start(r, esize, n, zcd, free_space); }
unsigned int rte_ring_enqueue_zc_bulk_start__extern(struct rte_ring *r, unsigned int n, struct rte_ring_zc_data *zcd, unsigned int *free_space) { return rte_ring_enqueue_zc_bulk_start(r, n, zcd, free_space); }
unsigned int rte_ring_enqueue_zc_burst_elem_start__extern(struct rte_ring *r, unsigned int esize, unsigned int n, struct rte_ring_zc_data *zcd, unsigned int *free_space) { return rte_ring_enqueue_zc_burst_elem_start(r, esize, n, zcd, free_space); }
unsigned int rte_ring_enqueue_zc_burst_start__extern(struct rte_ring *r, unsigned int n, struct rte_ring_zc_data *zcd, unsigned int *free_space) { return rte_ring_enqueue_zc_burst_start(r, n, zcd, free_space); }
void rte_ring_enqueue_zc_elem_finish__extern(struct rte_ring *r, unsigned int n) { rte_ring_enqueue_zc_elem_finish(r, n); }
void rte_ring_enqueue_zc_finish__extern(struct rte_ring *r, unsigned int n) { rte_ring_enqueue_zc_finish(r, n); }
unsigned int rte_ring_dequeue_zc_bulk_elem_start__extern(struct rte_ring *r, unsigned int esize, unsigned int n, struct rte_ring_zc_data *zcd, unsigned int *available) { return rte_ring_dequeue_zc_bulk_elem_start(r, esize, n, zcd, available); }
unsigned int rte_ring_dequeue_zc_bulk_start__extern(struct rte_ring *r, unsigned int n, struct rte_ring_zc_data *zcd, unsigned int *available) { return rte_ring_dequeue_zc_bulk_start(r, n, zcd, available); }
unsigned int rte_ring_dequeue_zc_burst_elem_start__extern(struct rte_ring *r, unsigned int esize, unsigned int n, struct rte_ring_zc_data *zcd, unsigned int *available) { return rte_ring_dequeue_zc_burst_elem_start(r, esize, n, zcd, available); }
unsigned int rte_ring_dequeue_zc_burst_start__extern(struct rte_ring *r, unsigned int n, struct rte_ring_zc_data *zcd, unsigned int *available) { return rte_ring_dequeue_zc_burst_start(r, n, zcd, available); }
void rte_ring_dequeue_zc_elem_finish__extern(struct rte_ring *r, unsigned int n) { rte_ring_dequeue_zc_elem_finish(r, n); }
void rte_ring_dequeue_zc_finish__extern(struct rte_ring *r, unsigned int n) { rte_ring_dequeue_zc_finish(r, n); }
unsigned int rte_ring_mp_enqueue_bulk__extern(struct rte_ring *r, void *const *obj_table, unsigned int n, unsigned int *free_space) { return rte_ring_mp_enqueue_bulk(r, obj_table, n, free_space); }
unsigned int rte_ring_sp_enqueue_bulk__extern(struct rte_ring *r, void *const *obj_table, unsigned int n, unsigned int *free_space) { return rte_ring_sp_enqueue_bulk(r, obj_table, n, free_space); }
unsigned int rte_ring_enqueue_bulk__extern(struct rte_ring *r, void *const *obj_table, unsigned int n, unsigned int *free_space) { return rte_ring_enqueue_bulk(r, obj_table, n, free_space); }
int rte_ring_mp_enqueue__extern(struct rte_ring *r, void *obj) { return rte_ring_mp_enqueue(r, obj); }
int rte_ring_sp_enqueue__extern(struct rte_ring *r, void *obj) { return rte_ring_sp_enqueue(r, obj); }
int rte_ring_enqueue__extern(struct rte_ring *r, void *obj) { return rte_ring_enqueue(r, obj); }
unsigned int rte_ring_mc_dequeue_bulk__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_mc_dequeue_bulk(r, obj_table, n, available); }
unsigned int rte_ring_sc_dequeue_bulk__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_sc_dequeue_bulk(r, obj_table, n, available); }
unsigned int rte_ring_dequeue_bulk__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_dequeue_bulk(r, obj_table, n, available); }
int rte_ring_mc_dequeue__extern(struct rte_ring *r, void **obj_p) { return rte_ring_mc_dequeue(r, obj_p); }
int rte_ring_sc_dequeue__extern(struct rte_ring *r, void **obj_p) { return rte_ring_sc_dequeue(r, obj_p); }
int rte_ring_dequeue__extern(struct rte_ring *r, void **obj_p) { return rte_ring_dequeue(r, obj_p); }
unsigned int rte_ring_count__extern(const struct rte_ring *r) { return rte_ring_count(r); }
unsigned int rte_ring_free_count__extern(const struct rte_ring *r) { return rte_ring_free_count(r); }
int rte_ring_full__extern(const struct rte_ring *r) { return rte_ring_full(r); }
int rte_ring_empty__extern(const struct rte_ring *r) { return rte_ring_empty(r); }
unsigned int rte_ring_get_size__extern(const struct rte_ring *r) { return rte_ring_get_size(r); }
unsigned int rte_ring_get_capacity__extern(const struct rte_ring *r) { return rte_ring_get_capacity(r); }
enum rte_ring_sync_type rte_ring_get_prod_sync_type__extern(const struct rte_ring *r) { return rte_ring_get_prod_sync_type(r); }
int rte_ring_is_prod_single__extern(const struct rte_ring *r) { return rte_ring_is_prod_single(r); }
enum rte_ring_sync_type rte_ring_get_cons_sync_type__extern(const struct rte_ring *r) { return rte_ring_get_cons_sync_type(r); }
int rte_ring_is_cons_single__extern(const struct rte_ring *r) { return rte_ring_is_cons_single(r); }
unsigned int rte_ring_mp_enqueue_burst__extern(struct rte_ring *r, void *const *obj_table, unsigned int n, unsigned int *free_space) { return rte_ring_mp_enqueue_burst(r, obj_table, n, free_space); }
unsigned int rte_ring_sp_enqueue_burst__extern(struct rte_ring *r, void *const *obj_table, unsigned int n, unsigned int *free_space) { return rte_ring_sp_enqueue_burst(r, obj_table, n, free_space); }
unsigned int rte_ring_enqueue_burst__extern(struct rte_ring *r, void *const *obj_table, unsigned int n, unsigned int *free_space) { return rte_ring_enqueue_burst(r, obj_table, n, free_space); }
unsigned int rte_ring_mc_dequeue_burst__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_mc_dequeue_burst(r, obj_table, n, available); }
unsigned int rte_ring_sc_dequeue_burst__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_sc_dequeue_burst(r, obj_table, n, available); }
unsigned int rte_ring_dequeue_burst__extern(struct rte_ring *r, void **obj_table, unsigned int n, unsigned int *available) { return rte_ring_dequeue_burst(r, obj_table, n, available); }
void * rte_memcpy__extern(void *dst, const void *src, size_t n) { return rte_memcpy(dst, src, n); }
void * rte_mov15_or_less__extern(void *dst, const void *src, size_t n) { return rte_mov15_or_less(dst, src, n); }
void rte_mov16__extern(uint8_t *dst, const uint8_t *src) { rte_mov16(dst, src); }
void rte_mov32__extern(uint8_t *dst, const uint8_t *src) { rte_mov32(dst, src); }
void rte_mov64__extern(uint8_t *dst, const uint8_t *src) { rte_mov64(dst, src); }
void rte_mov128__extern(uint8_t *dst, const uint8_t *src) { rte_mov128(dst, src); }
void rte_mov256__extern(uint8_t *dst, const uint8_t *src) { rte_mov256(dst, src); }
void * rte_memcpy_generic__extern(void *dst, const void *src, size_t n) { return rte_memcpy_generic(dst, src, n); }
void * rte_memcpy_aligned__extern(void *dst, const void *src, size_t n) { return rte_memcpy_aligned(dst, src, n); }
size_t rte_strlcpy__extern(char *dst, const char *src, size_t size) { return rte_strlcpy(dst, src, size); }
size_t rte_strlcat__extern(char *dst, const char *src, size_t size) { return rte_strlcat(dst, src, size); }
void rte_mempool_trace_ops_dequeue_bulk__extern(void *mempool, void **obj_table, uint32_t nb_objs) { rte_mempool_trace_ops_dequeue_bulk(mempool, obj_table, nb_objs); }
void rte_mempool_trace_ops_dequeue_contig_blocks__extern(void *mempool, void **first_obj_table, uint32_t nb_objs) { rte_mempool_trace_ops_dequeue_contig_blocks(mempool, first_obj_table, nb_objs); }
void rte_mempool_trace_ops_enqueue_bulk__extern(void *mempool, void *const *obj_table, uint32_t nb_objs) { rte_mempool_trace_ops_enqueue_bulk(mempool, obj_table, nb_objs); }
void rte_mempool_trace_generic_put__extern(void *mempool, void *const *obj_table, uint32_t nb_objs, void *cache) { rte_mempool_trace_generic_put(mempool, obj_table, nb_objs, cache); }
void rte_mempool_trace_put_bulk__extern(void *mempool, void *const *obj_table, uint32_t nb_objs, void *cache) { rte_mempool_trace_put_bulk(mempool, obj_table, nb_objs, cache); }
void rte_mempool_trace_generic_get__extern(void *mempool, void *const *obj_table, uint32_t nb_objs, void *cache) { rte_mempool_trace_generic_get(mempool, obj_table, nb_objs, cache); }
void rte_mempool_trace_get_bulk__extern(void *mempool, void **obj_table, uint32_t nb_objs, void *cache) { rte_mempool_trace_get_bulk(mempool, obj_table, nb_objs, cache); }
void rte_mempool_trace_get_contig_blocks__extern(void *mempool, void **first_obj_table, uint32_t nb_objs) { rte_mempool_trace_get_contig_blocks(mempool, first_obj_table, nb_objs); }
void rte_mempool_trace_default_cache__extern(void *mempool, uint32_t lcore_id, void *default_cache) { rte_mempool_trace_default_cache(mempool, lcore_id, default_cache); }
void rte_mempool_trace_cache_flush__extern(void *cache, void *mempool) { rte_mempool_trace_cache_flush(cache, mempool); }
struct rte_mempool_objhdr * rte_mempool_get_header__extern(void *obj) { return rte_mempool_get_header(obj); }
struct rte_mempool * rte_mempool_from_obj__extern(void *obj) { return rte_mempool_from_obj(obj); }
struct rte_mempool_objtlr * rte_mempool_get_trailer__extern(void *obj) { return rte_mempool_get_trailer(obj); }
struct rte_mempool_ops * rte_mempool_get_ops__extern(int ops_index) { return rte_mempool_get_ops(ops_index); }
int rte_mempool_ops_dequeue_bulk__extern(struct rte_mempool *mp, void **obj_table, unsigned int n) { return rte_mempool_ops_dequeue_bulk(mp, obj_table, n); }
int rte_mempool_ops_dequeue_contig_blocks__extern(struct rte_mempool *mp, void **first_obj_table, unsigned int n) { return rte_mempool_ops_dequeue_contig_blocks(mp, first_obj_table, n); }
int rte_mempool_ops_enqueue_bulk__extern(struct rte_mempool *mp, void *const *obj_table, unsigned int n) { return rte_mempool_ops_enqueue_bulk(mp, obj_table, n); }
struct rte_mempool_cache * rte_mempool_default_cache__extern(struct rte_mempool *mp, unsigned int lcore_id) { return rte_mempool_default_cache(mp, lcore_id); }
void rte_mempool_cache_flush__extern(struct rte_mempool_cache *cache, struct rte_mempool *mp) { rte_mempool_cache_flush(cache, mp); }
void rte_mempool_do_generic_put__extern(struct rte_mempool *mp, void *const *obj_table, unsigned int n, struct rte_mempool_cache *cache) { rte_mempool_do_generic_put(mp, obj_table, n, cache); }
void rte_mempool_generic_put__extern(struct rte_mempool *mp, void *const *obj_table, unsigned int n, struct rte_mempool_cache *cache) { rte_mempool_generic_put(mp, obj_table, n, cache); }
void rte_mempool_put_bulk__extern(struct rte_mempool *mp, void *const *obj_table, unsigned int n) { rte_mempool_put_bulk(mp, obj_table, n); }
void rte_mempool_put__extern(struct rte_mempool *mp, void *obj) { rte_mempool_put(mp, obj); }
int rte_mempool_do_generic_get__extern(struct rte_mempool *mp, void **obj_table, unsigned int n, struct rte_mempool_cache *cache) { return rte_mempool_do_generic_get(mp, obj_table, n, cache); }
int rte_mempool_generic_get__extern(struct rte_mempool *mp, void **obj_table, unsigned int n, struct rte_mempool_cache *cache) { return rte_mempool_generic_get(mp, obj_table, n, cache); }
int rte_mempool_get_bulk__extern(struct rte_mempool *mp, void **obj_table, unsigned int n) { return rte_mempool_get_bulk(mp, obj_table, n); }
int rte_mempool_get__extern(struct rte_mempool *mp, void **obj_p) { return rte_mempool_get(mp, obj_p); }
int rte_mempool_get_contig_blocks__extern(struct rte_mempool *mp, void **first_obj_table, unsigned int n) { return rte_mempool_get_contig_blocks(mp, first_obj_table, n); }
int rte_mempool_full__extern(const struct rte_mempool *mp) { return rte_mempool_full(mp); }
int rte_mempool_empty__extern(const struct rte_mempool *mp) { return rte_mempool_empty(mp); }
rte_iova_t rte_mempool_virt2iova__extern(const void *elt) { return rte_mempool_virt2iova(elt); }
void * rte_mempool_get_priv__extern(struct rte_mempool *mp) { return rte_mempool_get_priv(mp); }
void rte_prefetch0__extern(const void *p) { rte_prefetch0(p); }
void rte_prefetch1__extern(const void *p) { rte_prefetch1(p); }
void rte_prefetch2__extern(const void *p) { rte_prefetch2(p); }
void rte_prefetch_non_temporal__extern(const void *p) { rte_prefetch_non_temporal(p); }
void rte_prefetch0_write__extern(const void *p) { rte_prefetch0_write(p); }
void rte_prefetch1_write__extern(const void *p) { rte_prefetch1_write(p); }
void rte_prefetch2_write__extern(const void *p) { rte_prefetch2_write(p); }
void rte_cldemote__extern(const void *p) { rte_cldemote(p); }
uint16_t rte_constant_bswap16__extern(uint16_t x) { return rte_constant_bswap16(x); }
uint32_t rte_constant_bswap32__extern(uint32_t x) { return rte_constant_bswap32(x); }
uint64_t rte_constant_bswap64__extern(uint64_t x) { return rte_constant_bswap64(x); }
uint16_t rte_arch_bswap16__extern(uint16_t _x) { return rte_arch_bswap16(_x); }
uint32_t rte_arch_bswap32__extern(uint32_t _x) { return rte_arch_bswap32(_x); }
uint64_t rte_arch_bswap64__extern(uint64_t _x) { return rte_arch_bswap64(_x); }
void rte_mbuf_prefetch_part1__extern(struct rte_mbuf *m) { rte_mbuf_prefetch_part1(m); }
void rte_mbuf_prefetch_part2__extern(struct rte_mbuf *m) { rte_mbuf_prefetch_part2(m); }
uint16_t rte_pktmbuf_priv_size__extern(struct rte_mempool *mp) { return rte_pktmbuf_priv_size(mp); }
rte_iova_t rte_mbuf_iova_get__extern(const struct rte_mbuf *m) { return rte_mbuf_iova_get(m); }
void rte_mbuf_iova_set__extern(struct rte_mbuf *m, rte_iova_t iova) { rte_mbuf_iova_set(m, iova); }
rte_iova_t rte_mbuf_data_iova__extern(const struct rte_mbuf *mb) { return rte_mbuf_data_iova(mb); }
rte_iova_t rte_mbuf_data_iova_default__extern(const struct rte_mbuf *mb) { return rte_mbuf_data_iova_default(mb); }
struct rte_mbuf * rte_mbuf_from_indirect__extern(struct rte_mbuf *mi) { return rte_mbuf_from_indirect(mi); }
char * rte_mbuf_buf_addr__extern(struct rte_mbuf *mb, struct rte_mempool *mp) { return rte_mbuf_buf_addr(mb, mp); }
char * rte_mbuf_data_addr_default__extern(struct rte_mbuf *mb) { return rte_mbuf_data_addr_default(mb); }
char * rte_mbuf_to_baddr__extern(struct rte_mbuf *md) { return rte_mbuf_to_baddr(md); }
void * rte_mbuf_to_priv__extern(struct rte_mbuf *m) { return rte_mbuf_to_priv(m); }
uint32_t rte_pktmbuf_priv_flags__extern(struct rte_mempool *mp) { return rte_pktmbuf_priv_flags(mp); }
uint16_t rte_mbuf_refcnt_read__extern(const struct rte_mbuf *m) { return rte_mbuf_refcnt_read(m); }
void rte_mbuf_refcnt_set__extern(struct rte_mbuf *m, uint16_t new_value) { rte_mbuf_refcnt_set(m, new_value); }
uint16_t rte_mbuf_refcnt_update__extern(struct rte_mbuf *m, int16_t value) { return rte_mbuf_refcnt_update(m, value); }
uint16_t rte_mbuf_ext_refcnt_read__extern(const struct rte_mbuf_ext_shared_info *shinfo) { return rte_mbuf_ext_refcnt_read(shinfo); }
void rte_mbuf_ext_refcnt_set__extern(struct rte_mbuf_ext_shared_info *shinfo, uint16_t new_value) { rte_mbuf_ext_refcnt_set(shinfo, new_value); }
uint16_t rte_mbuf_ext_refcnt_update__extern(struct rte_mbuf_ext_shared_info *shinfo, int16_t value) { return rte_mbuf_ext_refcnt_update(shinfo, value); }
struct rte_mbuf * rte_mbuf_raw_alloc__extern(struct rte_mempool *mp) { return rte_mbuf_raw_alloc(mp); }
void rte_mbuf_raw_free__extern(struct rte_mbuf *m) { rte_mbuf_raw_free(m); }
uint16_t rte_pktmbuf_data_room_size__extern(struct rte_mempool *mp) { return rte_pktmbuf_data_room_size(mp); }
void rte_pktmbuf_reset_headroom__extern(struct rte_mbuf *m) { rte_pktmbuf_reset_headroom(m); }
void rte_pktmbuf_reset__extern(struct rte_mbuf *m) { rte_pktmbuf_reset(m); }
struct rte_mbuf * rte_pktmbuf_alloc__extern(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
int rte_pktmbuf_alloc_bulk__extern(struct rte_mempool *pool, struct rte_mbuf **mbufs, unsigned int count) { return rte_pktmbuf_alloc_bulk(pool, mbufs, count); }
struct rte_mbuf_ext_shared_info * rte_pktmbuf_ext_shinfo_init_helper__extern(void *buf_addr, uint16_t *buf_len, rte_mbuf_extbuf_free_callback_t free_cb, void *fcb_opaque) { return rte_pktmbuf_ext_shinfo_init_helper(buf_addr, buf_len, free_cb, fcb_opaque); }
void rte_pktmbuf_attach_extbuf__extern(struct rte_mbuf *m, void *buf_addr, rte_iova_t buf_iova, uint16_t buf_len, struct rte_mbuf_ext_shared_info *shinfo) { rte_pktmbuf_attach_extbuf(m, buf_addr, buf_iova, buf_len, shinfo); }
void rte_mbuf_dynfield_copy__extern(struct rte_mbuf *mdst, const struct rte_mbuf *msrc) { rte_mbuf_dynfield_copy(mdst, msrc); }
void rte_pktmbuf_attach__extern(struct rte_mbuf *mi, struct rte_mbuf *m) { rte_pktmbuf_attach(mi, m); }
void rte_pktmbuf_detach__extern(struct rte_mbuf *m) { rte_pktmbuf_detach(m); }
struct rte_mbuf * rte_pktmbuf_prefree_seg__extern(struct rte_mbuf *m) { return rte_pktmbuf_prefree_seg(m); }
void rte_pktmbuf_free_seg__extern(struct rte_mbuf *m) { rte_pktmbuf_free_seg(m); }
void rte_pktmbuf_free__extern(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
void rte_pktmbuf_refcnt_update__extern(struct rte_mbuf *m, int16_t v) { rte_pktmbuf_refcnt_update(m, v); }
uint16_t rte_pktmbuf_headroom__extern(const struct rte_mbuf *m) { return rte_pktmbuf_headroom(m); }
uint16_t rte_pktmbuf_tailroom__extern(const struct rte_mbuf *m) { return rte_pktmbuf_tailroom(m); }
struct rte_mbuf * rte_pktmbuf_lastseg__extern(struct rte_mbuf *m) { return rte_pktmbuf_lastseg(m); }
char * rte_pktmbuf_prepend__extern(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_prepend(m, len); }
char * rte_pktmbuf_append__extern(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }
char * rte_pktmbuf_adj__extern(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_adj(m, len); }
int rte_pktmbuf_trim__extern(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_trim(m, len); }
int rte_pktmbuf_is_contiguous__extern(const struct rte_mbuf *m) { return rte_pktmbuf_is_contiguous(m); }
const void * rte_pktmbuf_read__extern(const struct rte_mbuf *m, uint32_t off, uint32_t len, void *buf) { return rte_pktmbuf_read(m, off, len, buf); }
int rte_pktmbuf_chain__extern(struct rte_mbuf *head, struct rte_mbuf *tail) { return rte_pktmbuf_chain(head, tail); }
uint64_t rte_mbuf_tx_offload__extern(uint64_t il2, uint64_t il3, uint64_t il4, uint64_t tso, uint64_t ol3, uint64_t ol2, uint64_t unused) { return rte_mbuf_tx_offload(il2, il3, il4, tso, ol3, ol2, unused); }
int rte_validate_tx_offload__extern(const struct rte_mbuf *m) { return rte_validate_tx_offload(m); }
int rte_pktmbuf_linearize__extern(struct rte_mbuf *mbuf) { return rte_pktmbuf_linearize(mbuf); }
uint32_t rte_mbuf_sched_queue_get__extern(const struct rte_mbuf *m) { return rte_mbuf_sched_queue_get(m); }
uint8_t rte_mbuf_sched_traffic_class_get__extern(const struct rte_mbuf *m) { return rte_mbuf_sched_traffic_class_get(m); }
uint8_t rte_mbuf_sched_color_get__extern(const struct rte_mbuf *m) { return rte_mbuf_sched_color_get(m); }
void rte_mbuf_sched_get__extern(const struct rte_mbuf *m, uint32_t *queue_id, uint8_t *traffic_class, uint8_t *color) { rte_mbuf_sched_get(m, queue_id, traffic_class, color); }
void rte_mbuf_sched_queue_set__extern(struct rte_mbuf *m, uint32_t queue_id) { rte_mbuf_sched_queue_set(m, queue_id); }
void rte_mbuf_sched_traffic_class_set__extern(struct rte_mbuf *m, uint8_t traffic_class) { rte_mbuf_sched_traffic_class_set(m, traffic_class); }
void rte_mbuf_sched_color_set__extern(struct rte_mbuf *m, uint8_t color) { rte_mbuf_sched_color_set(m, color); }
void rte_mbuf_sched_set__extern(struct rte_mbuf *m, uint32_t queue_id, uint8_t traffic_class, uint8_t color) { rte_mbuf_sched_set(m, queue_id, traffic_class, color); }
void rte_ethdev_trace_rx_burst__extern(uint16_t port_id, uint16_t queue_id, void **pkt_tbl, uint16_t nb_rx) { rte_ethdev_trace_rx_burst(port_id, queue_id, pkt_tbl, nb_rx); }
void rte_ethdev_trace_tx_burst__extern(uint16_t port_id, uint16_t queue_id, void **pkts_tbl, uint16_t nb_pkts) { rte_ethdev_trace_tx_burst(port_id, queue_id, pkts_tbl, nb_pkts); }
uint64_t rte_eth_rss_hf_refine__extern(uint64_t rss_hf) { return rte_eth_rss_hf_refine(rss_hf); }
int rte_is_same_ether_addr__extern(const struct rte_ether_addr *ea1, const struct rte_ether_addr *ea2) { return rte_is_same_ether_addr(ea1, ea2); }
int rte_is_zero_ether_addr__extern(const struct rte_ether_addr *ea) { return rte_is_zero_ether_addr(ea); }
int rte_is_unicast_ether_addr__extern(const struct rte_ether_addr *ea) { return rte_is_unicast_ether_addr(ea); }
int rte_is_multicast_ether_addr__extern(const struct rte_ether_addr *ea) { return rte_is_multicast_ether_addr(ea); }
int rte_is_broadcast_ether_addr__extern(const struct rte_ether_addr *ea) { return rte_is_broadcast_ether_addr(ea); }
int rte_is_universal_ether_addr__extern(const struct rte_ether_addr *ea) { return rte_is_universal_ether_addr(ea); }
int rte_is_local_admin_ether_addr__extern(const struct rte_ether_addr *ea) { return rte_is_local_admin_ether_addr(ea); }
int rte_is_valid_assigned_ether_addr__extern(const struct rte_ether_addr *ea) { return rte_is_valid_assigned_ether_addr(ea); }
void rte_ether_addr_copy__extern(const struct rte_ether_addr *ea_from, struct rte_ether_addr *ea_to) { rte_ether_addr_copy(ea_from, ea_to); }
int rte_vlan_strip__extern(struct rte_mbuf *m) { return rte_vlan_strip(m); }
int rte_vlan_insert__extern(struct rte_mbuf **m) { return rte_vlan_insert(m); }
uint8_t rte_ipv4_hdr_len__extern(const struct rte_ipv4_hdr *ipv4_hdr) { return rte_ipv4_hdr_len(ipv4_hdr); }
uint16_t rte_raw_cksum__extern(const void *buf, size_t len) { return rte_raw_cksum(buf, len); }
int rte_raw_cksum_mbuf__extern(const struct rte_mbuf *m, uint32_t off, uint32_t len, uint16_t *cksum) { return rte_raw_cksum_mbuf(m, off, len, cksum); }
uint16_t rte_ipv4_cksum__extern(const struct rte_ipv4_hdr *ipv4_hdr) { return rte_ipv4_cksum(ipv4_hdr); }
uint16_t rte_ipv4_phdr_cksum__extern(const struct rte_ipv4_hdr *ipv4_hdr, uint64_t ol_flags) { return rte_ipv4_phdr_cksum(ipv4_hdr, ol_flags); }
uint16_t rte_ipv4_udptcp_cksum__extern(const struct rte_ipv4_hdr *ipv4_hdr, const void *l4_hdr) { return rte_ipv4_udptcp_cksum(ipv4_hdr, l4_hdr); }
uint16_t rte_ipv4_udptcp_cksum_mbuf__extern(const struct rte_mbuf *m, const struct rte_ipv4_hdr *ipv4_hdr, uint16_t l4_off) { return rte_ipv4_udptcp_cksum_mbuf(m, ipv4_hdr, l4_off); }
int rte_ipv4_udptcp_cksum_verify__extern(const struct rte_ipv4_hdr *ipv4_hdr, const void *l4_hdr) { return rte_ipv4_udptcp_cksum_verify(ipv4_hdr, l4_hdr); }
int rte_ipv4_udptcp_cksum_mbuf_verify__extern(const struct rte_mbuf *m, const struct rte_ipv4_hdr *ipv4_hdr, uint16_t l4_off) { return rte_ipv4_udptcp_cksum_mbuf_verify(m, ipv4_hdr, l4_off); }
uint16_t rte_ipv6_phdr_cksum__extern(const struct rte_ipv6_hdr *ipv6_hdr, uint64_t ol_flags) { return rte_ipv6_phdr_cksum(ipv6_hdr, ol_flags); }
uint16_t rte_ipv6_udptcp_cksum__extern(const struct rte_ipv6_hdr *ipv6_hdr, const void *l4_hdr) { return rte_ipv6_udptcp_cksum(ipv6_hdr, l4_hdr); }
uint16_t rte_ipv6_udptcp_cksum_mbuf__extern(const struct rte_mbuf *m, const struct rte_ipv6_hdr *ipv6_hdr, uint16_t l4_off) { return rte_ipv6_udptcp_cksum_mbuf(m, ipv6_hdr, l4_off); }
int rte_ipv6_udptcp_cksum_verify__extern(const struct rte_ipv6_hdr *ipv6_hdr, const void *l4_hdr) { return rte_ipv6_udptcp_cksum_verify(ipv6_hdr, l4_hdr); }
int rte_ipv6_udptcp_cksum_mbuf_verify__extern(const struct rte_mbuf *m, const struct rte_ipv6_hdr *ipv6_hdr, uint16_t l4_off) { return rte_ipv6_udptcp_cksum_mbuf_verify(m, ipv6_hdr, l4_off); }
int rte_ipv6_get_next_ext__extern(const uint8_t *p, int proto, size_t *ext_len) { return rte_ipv6_get_next_ext(p, proto, ext_len); }
enum rte_color rte_meter_srtcm_color_blind_check__extern(struct rte_meter_srtcm *m, struct rte_meter_srtcm_profile *p, uint64_t time, uint32_t pkt_len) { return rte_meter_srtcm_color_blind_check(m, p, time, pkt_len); }
enum rte_color rte_meter_srtcm_color_aware_check__extern(struct rte_meter_srtcm *m, struct rte_meter_srtcm_profile *p, uint64_t time, uint32_t pkt_len, enum rte_color pkt_color) { return rte_meter_srtcm_color_aware_check(m, p, time, pkt_len, pkt_color); }
enum rte_color rte_meter_trtcm_color_blind_check__extern(struct rte_meter_trtcm *m, struct rte_meter_trtcm_profile *p, uint64_t time, uint32_t pkt_len) { return rte_meter_trtcm_color_blind_check(m, p, time, pkt_len); }
enum rte_color rte_meter_trtcm_color_aware_check__extern(struct rte_meter_trtcm *m, struct rte_meter_trtcm_profile *p, uint64_t time, uint32_t pkt_len, enum rte_color pkt_color) { return rte_meter_trtcm_color_aware_check(m, p, time, pkt_len, pkt_color); }
enum rte_color rte_meter_trtcm_rfc4115_color_blind_check__extern(struct rte_meter_trtcm_rfc4115 *m, struct rte_meter_trtcm_rfc4115_profile *p, uint64_t time, uint32_t pkt_len) { return rte_meter_trtcm_rfc4115_color_blind_check(m, p, time, pkt_len); }
enum rte_color rte_meter_trtcm_rfc4115_color_aware_check__extern(struct rte_meter_trtcm_rfc4115 *m, struct rte_meter_trtcm_rfc4115_profile *p, uint64_t time, uint32_t pkt_len, enum rte_color pkt_color) { return rte_meter_trtcm_rfc4115_color_aware_check(m, p, time, pkt_len, pkt_color); }
uint32_t rte_flow_dynf_metadata_get__extern(struct rte_mbuf *m) { return rte_flow_dynf_metadata_get(m); }
void rte_flow_dynf_metadata_set__extern(struct rte_mbuf *m, uint32_t v) { rte_flow_dynf_metadata_set(m, v); }
int rte_flow_dynf_metadata_avail__extern(void) { return rte_flow_dynf_metadata_avail(); }
uint16_t rte_eth_rx_burst__extern(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts, const uint16_t nb_pkts) { return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts); }
int rte_eth_rx_queue_count__extern(uint16_t port_id, uint16_t queue_id) { return rte_eth_rx_queue_count(port_id, queue_id); }
int rte_eth_rx_descriptor_status__extern(uint16_t port_id, uint16_t queue_id, uint16_t offset) { return rte_eth_rx_descriptor_status(port_id, queue_id, offset); }
int rte_eth_tx_descriptor_status__extern(uint16_t port_id, uint16_t queue_id, uint16_t offset) { return rte_eth_tx_descriptor_status(port_id, queue_id, offset); }
uint16_t rte_eth_tx_burst__extern(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts) { return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts); }
uint16_t rte_eth_tx_prepare__extern(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts, uint16_t nb_pkts) { return rte_eth_tx_prepare(port_id, queue_id, tx_pkts, nb_pkts); }
uint16_t rte_eth_tx_buffer_flush__extern(uint16_t port_id, uint16_t queue_id, struct rte_eth_dev_tx_buffer *buffer) { return rte_eth_tx_buffer_flush(port_id, queue_id, buffer); }
uint16_t rte_eth_tx_buffer__extern(uint16_t port_id, uint16_t queue_id, struct rte_eth_dev_tx_buffer *buffer, struct rte_mbuf *tx_pkt) { return rte_eth_tx_buffer(port_id, queue_id, buffer, tx_pkt); }
uint64_t rte_vhost_va_from_guest_pa__extern(struct rte_vhost_memory *mem, uint64_t gpa, uint64_t *len) { return rte_vhost_va_from_guest_pa(mem, gpa, len); }
