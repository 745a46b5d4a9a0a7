/*
 * jobstatus: the fields of a job's status hash ({prefix}:job:{job_id}) and their
 * status values, as the queue's scripts (worker/queue/lua/) write them and backupctl
 * and the web tier read them (proto/README.md, "Job status"). The one list in C;
 * tests/test_names.sh checks that the scripts write every name here.
 */
#ifndef BW_JOBSTATUS_H
#define BW_JOBSTATUS_H

#define JS_STATUS      "status"
#define JS_TYPE        "type"
#define JS_USER_ID     "user_id"
#define JS_STAGE       "stage"
#define JS_PROGRESS    "progress"
#define JS_ROWS        "rows"
#define JS_ROWS_TOTAL  "rows_total"
#define JS_BYTES       "bytes"
#define JS_BACKUP_ID   "backup_id"
#define JS_NOTE        "note"
#define JS_RESULT      "result"
#define JS_ERROR       "error"
#define JS_ATTEMPTS    "attempts"
#define JS_CREATED_AT  "created_at"
#define JS_FINISHED_AT "finished_at"
#define JS_RETRY_AT    "retry_at"

/* values of JS_STATUS */
#define JS_QUEUED    "queued"
#define JS_RUNNING   "running"
#define JS_RETRYING  "retrying"
#define JS_COMPLETED "completed"
#define JS_DEAD      "dead"

#endif
