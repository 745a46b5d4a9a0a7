/*
 * jobs: the registry (see jobs.h). Types listed in jobspec.c but absent here
 * (backup, restore, verify and cleanup until they land) are refused with a
 * clear dead-letter reason rather than run half-way.
 */
#include "jobs.h"

#include <string.h>

static const JobType *const types[] = {&job_type_ping,     &job_type_sleep,  &job_type_backup,
                                       &job_type_restore,  &job_type_verify, &job_type_cleanup,
                                       &job_type_replicate};

const JobType *job_type_find(const char *name) {
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(types[i]->name, name) == 0)
            return types[i];
    return NULL;
}
