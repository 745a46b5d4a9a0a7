/*
 * jobs: the registry (see jobs.h).
 */
#include "jobs/jobs.h"

#include <string.h>

static const JobType *const types[] = {&job_type_ping,   &job_type_backup,  &job_type_restore,
                                       &job_type_verify, &job_type_cleanup, &job_type_replicate,
                                       &job_type_export, &job_type_sleep};
#define NTYPES (sizeof(types) / sizeof(types[0]))

const JobType *job_type_find(const char *name) {
    for (size_t i = 0; i < NTYPES; i++)
        if (strcmp(types[i]->name, name) == 0)
            return types[i];
    return NULL;
}

const JobType *const *job_types(size_t *n) {
    *n = NTYPES;
    return types;
}

void jobs_print_help(FILE *out) {
    fprintf(out, "\nJob types (XADD {prefix}:jobs * type NAME field value ...):\n");
    for (size_t i = 0; i < NTYPES; i++)
        if (!types[i]->test_only)
            fprintf(out, "  %-10s %s\n  %-10s   fields: %s\n", types[i]->name, types[i]->summary,
                    "", types[i]->fields);
}
