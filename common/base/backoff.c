/* backoff: delays before a retry (see backoff.h). */
#include "base/backoff.h"

#include <stdlib.h>

uint64_t backoff_bound_ms(const Backoff *b, int attempt) {
    uint64_t bound = b->base_ms;
    for (int i = 1; i < attempt && bound < b->max_ms; i++)
        bound *= 2;
    return bound > b->max_ms ? b->max_ms : bound;
}

uint64_t backoff_delay_ms(const Backoff *b, int attempt) {
    uint64_t bound = backoff_bound_ms(b, attempt);
    uint64_t least = (uint64_t)((double)bound * b->floor);
    /* rand() gives 31 bits: two of them cover any bound a delay can have */
    uint64_t r = ((uint64_t)rand() << 31) | (uint64_t)rand();
    return least + r % (bound - least + 1);
}
