/*
 * qscripts: Lua sources (see qscripts.h for the shared arguments).
 *
 * The prelude below is prepended to every script: it names the common
 * arguments and defines emit(), which appends one event to {prefix}:events
 * and publishes the same event as JSON on {prefix}:progress:{user_id}.
 */
#include "qscripts.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#define PRELUDE                                                                                    \
    "local P, group, me = ARGV[1], ARGV[2], ARGV[3]\n"                                             \
    "local now, maxlen, keep = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])\n"                    \
    "local stream = P .. ':jobs'\n"                                                                \
    "local function emit(uid, ev)\n"                                                               \
    "  ev[#ev + 1] = 'worker'; ev[#ev + 1] = me\n"                                                 \
    "  ev[#ev + 1] = 'ts'; ev[#ev + 1] = tostring(now)\n"                                          \
    "  redis.call('XADD', P .. ':events', 'MAXLEN', '~', maxlen, '*', unpack(ev))\n"               \
    "  if uid ~= '' then\n"                                                                        \
    "    local t = {}\n"                                                                           \
    "    for i = 1, #ev, 2 do t[ev[i]] = ev[i + 1] end\n"                                          \
    "    redis.call('PUBLISH', P .. ':progress:' .. uid, cjson.encode(t))\n"                       \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local function mine(entry)\n"                                                                 \
    "  local p = redis.call('XPENDING', stream, group, entry, entry, 1)\n"                         \
    "  if #p == 0 or p[1][2] ~= me then return nil end\n"                                          \
    "  return p[1]\n"                                                                              \
    "end\n"                                                                                        \
    "local function unlock(uid, token)\n"                                                          \
    "  if uid == '' then return end\n"                                                             \
    "  local lk = P .. ':lock:user:' .. uid\n"                                                     \
    "  if redis.call('GET', lk) == token then redis.call('DEL', lk) end\n"                         \
    "end\n"

/*
 * START: ARGV 7 entry, 8 job_id, 9 type, 10 user_id, 11 lock (1/0), 12 lock ttl,
 * 13 max attempts, 14 busy wait (ms), 15.. the entry's fields (for retries).
 * Replies {'run', attempt} | {'busy'} | {'duplicate', status} | {'dead', n} | {'lost'}.
 */
static const char start_lua[] = PRELUDE
    "local entry, jid, jtype, uid = ARGV[7], ARGV[8], ARGV[9], ARGV[10]\n"
    "local lock, ttl, max, wait = ARGV[11] == '1', ARGV[12], tonumber(ARGV[13]), "
    "tonumber(ARGV[14])\n"
    "if not mine(entry) then return {'lost'} end\n"
    "local jk = P .. ':job:' .. jid\n"
    "local cur = redis.call('HGET', jk, 'entry')\n"
    "if cur and cur ~= entry then\n"
    "  redis.call('XACK', stream, group, entry)\n"
    "  local st = redis.call('HGET', jk, 'status') or ''\n"
    "  emit(uid, {'event', 'duplicate', 'job_id', jid, 'type', jtype, 'user_id', uid, 'entry', "
    "entry})\n"
    "  return {'duplicate', st}\n"
    "end\n"
    "local fields = {}\n"
    "for i = 15, #ARGV do fields[#fields + 1] = ARGV[i] end\n"
    "local token = me .. '/' .. entry\n"
    "redis.call('HSETNX', jk, 'created_at', tostring(now))\n"
    "redis.call('HSET', jk, 'type', jtype, 'user_id', uid)\n"
    "redis.call('SET', jk .. ':payload', cmsgpack.pack(fields), 'PX', keep)\n"
    "redis.call('PEXPIRE', jk, keep)\n"
    "if lock then\n"
    "  local lk = P .. ':lock:user:' .. uid\n"
    "  local holder = redis.call('GET', lk)\n"
    "  if holder and holder ~= token then\n"
    "    redis.call('HSET', jk, 'status', 'queued', 'entry', '', 'stage', 'waiting for another job "
    "of this user')\n"
    "    redis.call('ZADD', P .. ':delayed', now + wait, jid)\n"
    "    redis.call('XACK', stream, group, entry)\n"
    "    emit(uid, {'event', 'waiting', 'job_id', jid, 'type', jtype, 'user_id', uid, 'status', "
    "'queued'})\n"
    "    return {'busy'}\n"
    "  end\n"
    "  redis.call('SET', lk, token, 'PX', ttl)\n"
    "end\n"
    "local n = redis.call('HINCRBY', jk, 'attempts', 1)\n"
    "if n > max then\n"
    "  local why = 'gave up after ' .. max .. ' attempts: the job never finished (its worker "
    "stopped each time)'\n"
    "  local d = {}\n"
    "  for i = 1, #fields do d[#d + 1] = fields[i] end\n"
    "  for _, v in ipairs({'entry', entry, 'error', why, 'attempts', tostring(n - 1), 'failed_at', "
    "tostring(now)}) do d[#d + 1] = v end\n"
    "  redis.call('XADD', P .. ':dead', '*', unpack(d))\n"
    "  redis.call('HSET', jk, 'status', 'dead', 'entry', entry, 'error', why, 'attempts', n - 1, "
    "'finished_at', now)\n"
    "  redis.call('XACK', stream, group, entry)\n"
    "  if lock then unlock(uid, token) end\n"
    "  emit(uid, {'event', 'dead', 'job_id', jid, 'type', jtype, 'user_id', uid, 'status', 'dead', "
    "'error', why})\n"
    "  return {'dead', n - 1}\n"
    "end\n"
    "redis.call('HSET', jk, 'status', 'running', 'entry', entry, 'worker', me, 'started_at', now,\n"
    "  'stage', 'starting', 'progress', 0, 'error', '')\n"
    "emit(uid, {'event', 'started', 'job_id', jid, 'type', jtype, 'user_id', uid, 'status', "
    "'running', 'attempt', tostring(n)})\n"
    "return {'run', n}\n";

/*
 * FINISH: ARGV 7 entry, 8 job_id, 9 type, 10 user_id, 11 outcome (completed |
 * retry | dead), 12 error, 13 retry at (ms), 14 backup_id, 15 rows, 16 bytes,
 * 17 attempts, 18.. the entry's fields (dead letters only). Replies 'ok' or 'lost'.
 * The hash is written only if it belongs to this entry or does not exist (a
 * malformed entry must not overwrite the status of a real job with its id).
 */
static const char finish_lua[] = PRELUDE
    "local entry, jid, jtype, uid, outcome = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]\n"
    "local why, at, bid, rows, bytes, n = ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[16], "
    "ARGV[17]\n"
    "if not mine(entry) then return 'lost' end\n"
    "local jk = P .. ':job:' .. jid\n"
    "local cur = redis.call('HGET', jk, 'entry')\n"
    "local own = (not cur) or cur == entry\n"
    "local ev = {'job_id', jid, 'type', jtype, 'user_id', uid, 'attempt', n}\n"
    "if outcome == 'completed' then\n"
    "  if own then redis.call('HSET', jk, 'status', 'completed', 'progress', 100, 'stage', "
    "'done',\n"
    "    'finished_at', now, 'backup_id', bid, 'rows', rows, 'bytes', bytes, 'error', '') end\n"
    "  table.insert(ev, 1, 'completed'); table.insert(ev, 1, 'event')\n"
    "  for _, v in ipairs({'status', 'completed', 'backup_id', bid, 'rows', rows, 'bytes', bytes}) "
    "do ev[#ev + 1] = v end\n"
    "elseif outcome == 'retry' then\n"
    "  if own then\n"
    "    redis.call('HSET', jk, 'status', 'retrying', 'entry', '', 'error', why, 'retry_at', at, "
    "'stage', 'waiting to retry')\n"
    "    redis.call('ZADD', P .. ':delayed', at, jid)\n"
    "  end\n"
    "  table.insert(ev, 1, 'retrying'); table.insert(ev, 1, 'event')\n"
    "  for _, v in ipairs({'status', 'retrying', 'error', why, 'retry_at', at}) do ev[#ev + 1] = v "
    "end\n"
    "else\n"
    "  local d, has_id = {}, false\n"
    "  for i = 18, #ARGV do d[#d + 1] = ARGV[i]; if i % 2 == 0 and ARGV[i] == 'job_id' then has_id "
    "= true end end\n"
    "  if not has_id then d[#d + 1] = 'job_id'; d[#d + 1] = jid end\n"
    "  for _, v in ipairs({'entry', entry, 'error', why, 'attempts', n, 'failed_at', "
    "tostring(now)}) do d[#d + 1] = v end\n"
    "  redis.call('XADD', P .. ':dead', '*', unpack(d))\n"
    "  if own then redis.call('HSET', jk, 'status', 'dead', 'entry', entry, 'error', why, "
    "'finished_at', now,\n"
    "    'type', jtype, 'user_id', uid, 'attempts', n) end\n"
    "  table.insert(ev, 1, 'dead'); table.insert(ev, 1, 'event')\n"
    "  for _, v in ipairs({'status', 'dead', 'error', why}) do ev[#ev + 1] = v end\n"
    "end\n"
    "if own then\n"
    "  if outcome == 'retry' then redis.call('PEXPIRE', jk .. ':payload', keep)\n"
    "  else redis.call('DEL', jk .. ':payload') end\n"
    "  redis.call('HSETNX', jk, 'created_at', tostring(now))\n"
    "  redis.call('PEXPIRE', jk, keep)\n"
    "end\n"
    "redis.call('XACK', stream, group, entry)\n"
    "unlock(uid, me .. '/' .. entry)\n"
    "emit(uid, ev)\n"
    "return 'ok'\n";

/* RENEW: ARGV 7 entry, 8 user_id ('' = no lock), 9 lock ttl. Replies 1, or 0 when the entry is no
 * longer ours. */
static const char renew_lua[] = PRELUDE
    "local entry, uid, ttl = ARGV[7], ARGV[8], ARGV[9]\n"
    "if not mine(entry) then return 0 end\n"
    "redis.call('XCLAIM', stream, group, me, 0, entry, 'JUSTID')\n"
    "if uid ~= '' then\n"
    "  local lk = P .. ':lock:user:' .. uid\n"
    "  if redis.call('GET', lk) == me .. '/' .. entry then redis.call('PEXPIRE', lk, ttl) end\n"
    "end\n"
    "return 1\n";

/* PROGRESS: ARGV 7 entry, 8 job_id, 9 type, 10 user_id, 11 stage, 12 percent, 13 rows, 14 bytes. */
static const char progress_lua[] =
    PRELUDE "local entry, jid, jtype, uid = ARGV[7], ARGV[8], ARGV[9], ARGV[10]\n"
            "local jk = P .. ':job:' .. jid\n"
            "if redis.call('HGET', jk, 'entry') ~= entry then return 0 end\n"
            "redis.call('HSET', jk, 'stage', ARGV[11], 'progress', ARGV[12], 'rows', ARGV[13], "
            "'bytes', ARGV[14])\n"
            "emit(uid, {'event', 'progress', 'job_id', jid, 'type', jtype, 'user_id', uid, "
            "'status', 'running',\n"
            "  'stage', ARGV[11], 'progress', ARGV[12], 'rows', ARGV[13], 'bytes', ARGV[14]})\n"
            "return 1\n";

/*
 * HANDBACK: ARGV 7 entry, 8 job_id, 9 type, 10 user_id, 11 lease (ms). The
 * entry stays in this consumer's pending list but looks idle past the lease,
 * so any live worker's sweep takes it at once; RETRYCOUNT undoes this delivery
 * and the attempt is not counted.
 */
static const char handback_lua[] =
    PRELUDE "local entry, jid, jtype, uid, lease = ARGV[7], ARGV[8], ARGV[9], ARGV[10], "
            "tonumber(ARGV[11])\n"
            "local p = mine(entry)\n"
            "if not p then return 0 end\n"
            "local count = p[4] - 1\n"
            "if count < 0 then count = 0 end\n"
            "redis.call('XCLAIM', stream, group, me, 0, entry, 'IDLE', lease + 1, 'RETRYCOUNT', "
            "count, 'JUSTID')\n"
            "local jk = P .. ':job:' .. jid\n"
            "if redis.call('HGET', jk, 'entry') == entry then\n"
            "  if redis.call('HGET', jk, 'status') == 'running' then redis.call('HINCRBY', jk, "
            "'attempts', -1) end\n"
            "  redis.call('HSET', jk, 'status', 'queued', 'stage', 'handed back at shutdown')\n"
            "end\n"
            "unlock(uid, me .. '/' .. entry)\n"
            "emit(uid, {'event', 'handed_back', 'job_id', jid, 'type', jtype, 'user_id', uid, "
            "'status', 'queued'})\n"
            "return 1\n";

/* PROMOTE: ARGV 7 limit. Due retries go back to the stream as new entries. Replies the count. */
static const char promote_lua[] =
    PRELUDE "local due = redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', now, 'LIMIT', 0, "
            "tonumber(ARGV[7]))\n"
            "local moved = 0\n"
            "for _, jid in ipairs(due) do\n"
            "  if redis.call('ZREM', P .. ':delayed', jid) == 1 then\n"
            "    local jk = P .. ':job:' .. jid\n"
            "    local payload = redis.call('GET', jk .. ':payload')\n"
            "    if payload then\n"
            "      local id = redis.call('XADD', stream, '*', unpack(cmsgpack.unpack(payload)))\n"
            "      redis.call('HSET', jk, 'entry', id, 'status', 'queued')\n"
            "      moved = moved + 1\n"
            "    end\n"
            "  end\n"
            "end\n"
            "return moved\n";

/* RETIRE: drop this consumer when nothing is pending for it. Replies 1 if removed. */
static const char retire_lua[] =
    PRELUDE "if #redis.call('XPENDING', stream, group, '-', '+', 1, me) > 0 then return 0 end\n"
            "redis.call('XGROUP', 'DELCONSUMER', stream, group, me)\n"
            "return 1\n";

static const char *bodies[QS_COUNT] = {start_lua,    finish_lua,  renew_lua, progress_lua,
                                       handback_lua, promote_lua, retire_lua};
static char shas[QS_COUNT][41];

const char *qscript_body(QScript s) {
    return bodies[s];
}

const char *qscript_sha(QScript s) {
    if (shas[s][0] == '\0') {
        unsigned char md[SHA_DIGEST_LENGTH];
        SHA1((const unsigned char *)bodies[s], strlen(bodies[s]), md);
        for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
            snprintf(shas[s] + 2 * i, 3, "%02x", md[i]);
    }
    return shas[s];
}
