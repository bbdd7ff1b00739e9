/*
** Resume: continuing a stored run, with the answers a person gave to its
** waits.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include <sys/stat.h>
#include <time.h>

#include "resume.h"
#include "owner.h"
#include "record.h"
#include "durable.h"
#include "error.h"
#include "loader.h"
#include "memory.h"
#include "plan.h"
#include "reload.h"
#include "run.h"
#include "trace.h"
#include "value.h"

static void name_waits(lua_State *L, sl_core *e, const char *run_id, int wi) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, wi);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, wi, i);
    lua_getfield(L, -1, "path");
    sl_store_checkpoint *c;
    if (sl_store_checkpoint_get(e->store, run_id, lua_tostring(L, -1), &c) == 0) {
      lua_pushstring(L, c->name);
      lua_setfield(L, -3, "name");
      sl_store_checkpoint_free(c);
    }
    lua_pop(L, 2);
  }
}

/*
** Matches the answer at ii to the run's open waits (one wait: the answer
** itself; several: an object keyed by step name or path), checks each
** against its schema, and records it. Pushes the answers by path. A wrong
** answer raises with the schema path that failed, changing nothing.
*/
static void take_answers(lua_State *L, sl_core *e, const char *run_id, int ii) {
  sl_record_push_waits(L, e, run_id);                  /* waits */
  int wi = lua_gettop(L);
  name_waits(L, e, run_id, wi);
  lua_newtable(L);                                      /* waits answers */
  int ai = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, wi), open = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, wi, i);
    if (lua_getfield(L, -1, "answer") == LUA_TNIL) open++;
    lua_pop(L, 2);
  }
  if (open == 0) luaL_error(L, "run %s has no open waits to answer", run_id);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, wi, i);                              /* ... w */
    int w = lua_gettop(L);
    lua_getfield(L, w, "path");
    const char *path = lua_tostring(L, -1);
    if (lua_getfield(L, w, "answer") != LUA_TNIL) {     /* answered before */
      lua_setfield(L, ai, path);
      lua_settop(L, w - 1);
      continue;
    }
    lua_pop(L, 1);
    if (open == 1) {
      lua_pushvalue(L, ii);
    } else {
      if (!lua_istable(L, ii))
        luaL_error(L, "run %s waits at %d points: answer with an object keyed "
                      "by step name or path", run_id, (int)open);
      if (lua_getfield(L, ii, path) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_getfield(L, w, "name");
        const char *name = lua_tostring(L, -1);
        lua_pop(L, 1);
        if (name == NULL || lua_getfield(L, ii, name) == LUA_TNIL)
          luaL_error(L, "no answer for the wait at '%s' (step '%s')", path,
                     name ? name : "?");
      }
    }
    int ans = lua_gettop(L);
    if (lua_getfield(L, w, "schema") != LUA_TNIL) {
      lua_getglobal(L, "require");
      lua_pushliteral(L, "sluice.schema");
      lua_call(L, 1, 1);
      lua_getfield(L, -1, "validate");
      lua_pushvalue(L, -3);
      lua_pushvalue(L, ans);
      lua_call(L, 2, 2);
      if (!lua_toboolean(L, -2)) {
        lua_getfield(L, w, "name");
        luaL_error(L, "the answer for step '%s' was refused, the run stays paused: %s",
                   luaL_optstring(L, -1, path), lua_tostring(L, -2));
      }
    }
    lua_settop(L, ans);
    lua_pushvalue(L, ans);
    lua_setfield(L, ai, path);
    lua_settop(L, w - 1);
  }
  /* All refused or all recorded: only now is anything written. */
  sl_record_answers(L, e, run_id, ai);
  lua_remove(L, wi);
}

/*
** {======================================================
** Loading a stored run's pipeline
** =======================================================
** A worker executes runs of many files: what a file loaded (its pipelines,
** its policy table and the files it read) is kept by path, with the size,
** time and inode of each file read, and used again while none changed.
*/

#define LOADED_KEY "sluice.resume.loaded"

/* The signature of the files in the list at fi: what changes when one is
   edited. Pushes it. */
static void push_signature(lua_State *L, int fi) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  lua_Integer n = (lua_Integer)lua_rawlen(L, fi);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, fi, i);
    const char *f = lua_tostring(L, -1);
    struct stat st;
    char part[96];
    if (f != NULL && stat(f, &st) == 0)
      snprintf(part, sizeof part, "%lld.%ld:%lld:%llu;", (long long)st.st_mtim.tv_sec,
               (long)st.st_mtim.tv_nsec, (long long)st.st_size, (unsigned long long)st.st_ino);
    else
      snprintf(part, sizeof part, "-;");
    lua_pop(L, 1);
    luaL_addstring(&b, part);
  }
  luaL_pushresult(&b);
}

/* Makes file the host's loaded file: as kept if nothing it read changed,
   else loaded again (raising as a load does). */
static void use_file(lua_State *L, sl_host *h, const char *file) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, LOADED_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, LOADED_KEY);
  }
  int ki = lua_gettop(L);
  if (lua_getfield(L, ki, file) == LUA_TTABLE) {            /* kept entry */
    int ei = lua_gettop(L);
    lua_getfield(L, ei, "files");
    push_signature(L, lua_gettop(L));
    lua_getfield(L, ei, "sig");
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 3);
    if (same) {
      /* The kept snapshot becomes the host's. */
      lua_getfield(L, ei, "kinds");
      lua_rawseti(L, LUA_REGISTRYINDEX, h->core.ref_kinds);
      lua_getfield(L, ei, "pipelines");
      lua_rawseti(L, LUA_REGISTRYINDEX, h->ref_pipelines);
      lua_getfield(L, ei, "files");
      lua_rawseti(L, LUA_REGISTRYINDEX, h->ref_files);
      if (h->load_path == NULL || strcmp(h->load_path, file) != 0) {
        char *copy = strdup(file);
        if (copy == NULL) luaL_error(L, "not enough memory");
        free(h->load_path);
        h->load_path = copy;
      }
      lua_settop(L, ki - 1);
      return;
    }
  }
  lua_settop(L, ki);
  sl_reload_load(L, h, file);
  lua_pop(L, 1);
  lua_createtable(L, 0, 4);                                 /* kept entry */
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->core.ref_kinds);
  lua_setfield(L, -2, "kinds");
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_pipelines);
  lua_setfield(L, -2, "pipelines");
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_files);
  push_signature(L, lua_gettop(L));
  lua_setfield(L, -3, "sig");
  lua_setfield(L, -2, "files");
  lua_setfield(L, ki, file);
  lua_settop(L, ki - 1);
}

/* Pushes pipeline of file (loaded or kept) and its code version as hex
   into hex ("" when it has none); returns the step's index. */
static int push_pipeline(lua_State *L, sl_host *h, const char *file, const char *pipeline,
                         char hex[SL_KEY_HEXLEN + 1]) {
  use_file(L, h, file);
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_pipelines);
  sl_load_select(L, -1, pipeline, file, NULL);              /* set step */
  lua_remove(L, -2);
  int si = lua_gettop(L);
  sl_key version;
  char err[128];
  if (sl_plan_version(L, sl_plan_push(L, si), si, &version, err, sizeof err) == 0)
    sl_key_hex(&version, hex);
  else
    hex[0] = '\0';
  lua_pop(L, 1);                                            /* the plan */
  return si;
}

/* Does the pipeline at si go on with a run begun on other code
   (on_code_change = "continue")? */
static int continues_on_change(lua_State *L, int si) {
  int yes = lua_getfield(L, si, "on_code_change") == LUA_TSTRING &&
            strcmp(lua_tostring(L, -1), "continue") == 0;
  lua_pop(L, 1);
  return yes;
}

/* Decodes the stored options at oi (a string or nil): the budget table is
   pushed (its index returned; 0 and nothing pushed when none), and the
   memory limit and trace are applied where the engine sets none. */
static int apply_options(lua_State *L, sl_core *e, const char *id, int oi) {
  if (lua_isnil(L, oi)) return 0;
  const char *text = lua_tostring(L, oi);
  if (sl_json_decode(L, text, strlen(text)) != 0) lua_error(L);
  int di = lua_gettop(L);
  int bi = 0;
  if (lua_getfield(L, di, "memory_limit") == LUA_TNUMBER && sl_memory_get_limit(L) == 0)
    sl_memory_limit(L, (size_t)lua_tointeger(L, -1));
  lua_pop(L, 1);
  if (lua_getfield(L, di, "trace") == LUA_TSTRING && e->trace == NULL) {
    char terr[300];
    if (sl_trace_open(lua_tostring(L, -1), &e->trace, terr, sizeof terr) != 0) {
      e->trace = NULL;
      luaL_error(L, "run %s wrote its trace to %s, which cannot be opened again: %s",
                 id, lua_tostring(L, -1), terr);
    }
  }
  lua_pop(L, 1);
  lua_getfield(L, di, "budget");
  if (lua_istable(L, -1)) {
    lua_remove(L, di);
    bi = lua_gettop(L);
  } else {
    lua_pop(L, 2);
  }
  return bi;
}

/* A run's record (sl_store_replay) held by a userdata until the resumed
   run takes it, so a resume that raises on the way frees it. */
#define REPLAY_MT "sluice.replay"

static int replay_gc(lua_State *L) {
  sl_store_replay **box = lua_touserdata(L, 1);
  sl_store_replay_free(*box);
  *box = NULL;
  return 0;
}

static sl_store_replay **push_replay_box(lua_State *L, sl_store_replay *rp) {
  sl_store_replay **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = rp;
  if (luaL_newmetatable(L, REPLAY_MT)) {
    lua_pushcfunction(L, replay_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return box;
}

/* }====================================================== */


sl_run *sl_resume(lua_State *L, sl_host *h, const char *id, int ii, int force) {
  sl_core *e = &h->core;
  if (e->store == NULL) luaL_error(L, "cannot resume: the engine has no store");
  ii = ii ? lua_absindex(L, ii) : 0;
  sl_store_run *row;
  int rc = sl_store_run_get(e->store, id, &row);
  if (rc == SL_STORE_ENOTFOUND)
    luaL_error(L, "no run with id '%s' in %s", id, sl_store_path(e->store));
  if (rc != 0) luaL_error(L, "%s", sl_store_errmsg(e->store));
  /* The row's strings go to the Lua stack before anything can raise. */
  int top = lua_gettop(L);
  lua_pushstring(L, row->status);                       /* status */
  lua_pushstring(L, row->file ? row->file : "");        /* status file */
  lua_pushstring(L, row->pipeline);                     /* ... pipeline */
  lua_pushstring(L, row->def_hash ? row->def_hash : ""); /* ... hash */
  lua_pushstring(L, row->input ? row->input : "null");  /* ... input */
  if (row->options) lua_pushstring(L, row->options);
  else lua_pushnil(L);                                  /* ... options */
  if (row->error) lua_pushstring(L, row->error);
  else lua_pushnil(L);                                  /* ... error */
  if (row->owner) lua_pushstring(L, row->owner);
  else lua_pushnil(L);                                  /* ... owner */
  int queued = row->queue != NULL;
  int64_t lease = row->lease_ms, epoch = row->epoch, due = row->due_ms;
  sl_store_run_free(row);
  const char *status = lua_tostring(L, top + 1);
  const char *file = lua_tostring(L, top + 2);
  const char *owner = lua_tostring(L, top + 8);
  int64_t now = sl_owner_now_ms();
  int active = strcmp(status, "running") == 0 || strcmp(status, "waiting") == 0 ||
               strcmp(status, "queued") == 0;
  if (active && sl_owner_alive(owner, lease, now)) {
    /* Its owner executes it still: a second owner would run its steps
       twice. */
    char when[64];
    time_t t = (time_t)(lease / 1000);
    struct tm tmv;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tmv));
    luaL_error(L, "run %s is being executed by %s (alive; its lease runs until %s): "
                  "it can be resumed once that process has stopped", id, owner, when);
  }
  if (active) status = "interrupted";   /* its owner is gone */
  int paused = strcmp(status, "paused") == 0;
  if (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0)
    luaL_error(L, "run %s has %s: only a paused or interrupted run can be resumed",
               id, status);
  if (strcmp(status, "cancelled") == 0) {
    const char *why = "cancelled", *by = NULL;
    if (!lua_isnil(L, top + 7)) {
      const char *text = lua_tostring(L, top + 7);
      if (sl_json_decode(L, text, strlen(text)) == 0 && lua_istable(L, -1)) {
        int ei = lua_gettop(L);
        if (lua_getfield(L, ei, "message") == LUA_TSTRING) why = lua_tostring(L, -1);
        if (lua_getfield(L, ei, "aborted") == LUA_TBOOLEAN &&
            lua_getfield(L, ei, "step") == LUA_TSTRING)
          by = lua_tostring(L, -1);
      }
    }
    if (by != NULL)
      luaL_error(L, "run %s was aborted by step '%s' (%s): an aborted run has ended "
                    "for good and cannot be resumed", id, by, why);
    luaL_error(L, "run %s was cancelled (%s): a cancelled run has ended for good "
                  "and cannot be resumed", id, why);
  }
  if (ii && !lua_isnil(L, ii) && !paused)
    luaL_error(L, "run %s is %s, not paused: --input answers a paused run only", id, status);
  /* A question that timed out needs no answer: the resume takes its
     timeout path. */
  int timed_out = paused && due > 0 && due <= now;
  if (paused && !timed_out && (ii == 0 || lua_isnil(L, ii))) {
    if (due > 0) {
      char when[64];
      time_t t = (time_t)(due / 1000);
      struct tm tmv;
      strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tmv));
      luaL_error(L, "run %s is paused waiting for input: resume it with --input JSON, "
                    "or after %s, when its question times out", id, when);
    }
    luaL_error(L, "run %s is paused waiting for input: resume it with --input JSON", id);
  }
  if (timed_out && (ii == 0 || lua_isnil(L, ii))) paused = 0;
  if (queued && paused) {
    /* A run workers execute goes back to its queue with its answers; this
       process need not have its file. */
    take_answers(L, e, id, ii);
    if (e->writer != NULL) sl_writer_sync(e->writer, NULL, 0);
    int64_t lease_until = sl_owner_now_ms() + e->lease_ms;
    int crc = sl_store_run_claim(e->store, id, e->owner, lease_until, epoch, "running");
    if (crc == 0) crc = sl_store_run_requeue(e->store, id, e->owner, epoch + 1, NULL);
    if (crc == SL_STORE_ECONFLICT)
      luaL_error(L, "run %s was taken over by another process just now: %s", id,
                 sl_store_errmsg(e->store));
    if (crc != 0) luaL_error(L, "%s", sl_store_errmsg(e->store));
    lua_settop(L, top);
    return NULL;
  }
  if (file[0] == '\0')
    luaL_error(L, "run %s was not started from a pipeline file, so it cannot be "
                  "resumed from the command line", id);
  char hex[SL_KEY_HEXLEN + 1];
  int si = push_pipeline(L, h, file, lua_tostring(L, top + 3), hex);   /* ... step */
  if (!force && strcmp(hex, lua_tostring(L, top + 4)) != 0 && !continues_on_change(L, si))
    luaL_error(L, "the pipeline '%s' in %s changed since run %s started: resuming "
                  "it could mix two versions (use --force to resume anyway, or "
                  "on_code_change = \"continue\" in the pipeline)",
               lua_tostring(L, top + 3), file, id);
  int ai = 0;
  if (paused) {
    take_answers(L, e, id, ii);
    ai = lua_gettop(L);
  }
  const char *input = lua_tostring(L, top + 5);
  if (sl_json_decode(L, input, strlen(input)) != 0) lua_error(L);
  int in = lua_gettop(L);
  int bi = apply_options(L, e, id, top + 6);
  /* Take it over: of two processes resuming the run at once, one wins. */
  int64_t lease_until = sl_owner_now_ms() + e->lease_ms;
  if (e->writer != NULL) {
    /* What this engine wrote must be in before the run moves on. */
    sl_writer_sync(e->writer, NULL, 0);
  }
  int rc2 = sl_store_run_claim(e->store, id, e->owner, lease_until, epoch, "running");
  if (rc2 == SL_STORE_ECONFLICT)
    luaL_error(L, "run %s was taken over by another process just now: %s", id,
               sl_store_errmsg(e->store));
  if (rc2 != 0) luaL_error(L, "%s", sl_store_errmsg(e->store));
  /* What it recorded, read once now that it is claimed: nothing more can
     be recorded for it by anyone else. */
  sl_store_replay **box = push_replay_box(L, NULL);
  if (sl_store_replay_read(e->store, id, box) != 0) luaL_error(L, "%s", sl_store_errmsg(e->store));
  sl_run_opts o = {bi, id, ai, epoch + 1, box, 0};
  return sl_run_launch(L, h, si, in, &o);
}

sl_run *sl_resume_claimed(lua_State *L, sl_host *h, const sl_store_run *row,
                          sl_store_replay *rp, int64_t park_after_ms, char *why,
                          size_t whylen) {
  sl_core *e = &h->core;
  why[0] = '\0';
  int top = lua_gettop(L);
  sl_store_replay **box = push_replay_box(L, rp);                /* box */
  top++;
  lua_pushstring(L, row->id);                                   /* id */
  lua_pushstring(L, row->file ? row->file : "");                /* id file */
  lua_pushstring(L, row->pipeline);
  lua_pushstring(L, row->def_hash ? row->def_hash : "");
  lua_pushstring(L, row->input ? row->input : "null");
  if (row->options) lua_pushstring(L, row->options);
  else lua_pushnil(L);                                          /* ... options */
  int64_t epoch = row->epoch;
  const char *id = lua_tostring(L, top + 1);
  const char *file = lua_tostring(L, top + 2);
  if (file[0] == '\0')
    luaL_error(L, "run %s has no pipeline file to execute", id);
  char hex[SL_KEY_HEXLEN + 1];
  int si = push_pipeline(L, h, file, lua_tostring(L, top + 3), hex);
  const char *want = lua_tostring(L, top + 4);
  if (want[0] != '\0' && strcmp(hex, want) != 0 && !continues_on_change(L, si)) {
    snprintf(why, whylen, "a worker with code version %.12s of %s (this one has %.12s)",
             want, file, hex);
    lua_settop(L, top - 1);   /* the box frees the record */
    return NULL;
  }
  /* The answers recorded for its waits, by path. */
  lua_newtable(L);
  int ai = lua_gettop(L), answered = 0;
  for (int i = 0; i < sl_store_replay_nwaits(rp); i++) {
    const sl_store_wait *w = sl_store_replay_wait(rp, i);
    if (w->answer == NULL) continue;
    if (sl_json_decode(L, w->answer, strlen(w->answer)) != 0) lua_error(L);
    lua_setfield(L, ai, w->path);
    answered++;
  }
  const char *input = lua_tostring(L, top + 5);
  if (sl_json_decode(L, input, strlen(input)) != 0) lua_error(L);
  int in = lua_gettop(L);
  int bi = apply_options(L, e, id, top + 6);
  sl_run_opts o = {bi, id, answered ? ai : 0, epoch, box, park_after_ms};
  sl_run *r = sl_run_launch(L, h, si, in, &o);
  /* Only the run is left, where the box and the row's strings were. */
  lua_replace(L, top);
  lua_settop(L, top);
  return r;
}
