/* Helpers shared by the proposers; see proposer.h. */
#include "draft/proposer.h"

void sd_proposer_free(sd_proposer *p) {
    if (p) p->destroy(p);
}

int sd_tokens_lcp(const int32_t *a, int na, const int32_t *b, int nb) {
    int n = na < nb ? na : nb, i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}
