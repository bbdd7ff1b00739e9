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
#include "suggest.h"
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

/* Is the wait at path a breakpoint's (STEP@before, STEP@after)? */
static int is_break(const char *path) {
  const char *at = path ? strrchr(path, '@') : NULL;
  return at != NULL && (strcmp(at, "@before") == 0 || strcmp(at, "@after") == 0);
}

/* Counts the run's open waits, and of them the breakpoints'. */
static void count_open(lua_State *L, sl_core *e, const char *run_id, int *open, int *breaks) {
  sl_record_push_waits(L, e, run_id);
  *open = *breaks = 0;
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (lua_getfield(L, -1, "answer") == LUA_TNIL) {
      (*open)++;
      lua_getfield(L, -2, "path");
      *breaks += is_break(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
}

/*
** Matches the answer at ii to the run's open waits (one wait: the answer
** itself; several: an object keyed by step name or path), checks each
** against its schema, and records it; ii may be 0 or nil when only
** breakpoints wait (each goes on as it was). Pushes the answers by path. A
** wrong answer raises with the schema path that failed, changing nothing.
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
    if (is_break(path)) {
      /* A breakpoint: go on as it was, or with the input (before) or
         output (after) the answer gives. */
      int given = 0;
      if (ii != 0 && !lua_isnil(L, ii)) {
        if (open == 1) {
          lua_pushvalue(L, ii);
          given = 1;
        } else if (lua_istable(L, ii)) {
          given = lua_getfield(L, ii, path) != LUA_TNIL;
          if (!given) {
            lua_pop(L, 1);
            lua_getfield(L, w, "name");
            const char *name = lua_tostring(L, -1);
            lua_pop(L, 1);
            given = name != NULL && lua_getfield(L, ii, name) != LUA_TNIL;
            if (!given) lua_pop(L, 1);
          }
        }
      }
      lua_createtable(L, 0, 2);
      if (given) {
        lua_insert(L, -2);
        lua_setfield(L, -2, "value");
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "replace");
      } else {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "continue");
      }
      lua_setfield(L, ai, path);
      lua_settop(L, w - 1);
      continue;
    }
    if (ii == 0 || lua_isnil(L, ii))
      luaL_error(L, "run %s is paused waiting for input at '%s': resume it with --input JSON",
                 run_id, path);
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
static int apply_options(lua_State *L, sl_core *e, const char *id, int oi, int *bki) {
  *bki = 0;
  if (lua_isnil(L, oi)) return 0;
  const char *text = lua_tostring(L, oi);
  if (sl_json_decode(L, text, strlen(text)) != 0) lua_error(L);
  int di = lua_gettop(L);
  int bi = 0;
  if (lua_getfield(L, di, "breaks") == LUA_TTABLE) *bki = lua_gettop(L);
  else lua_pop(L, 1);
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
  /* The options table stays on the stack under what is kept of it. */
  if (lua_getfield(L, di, "budget") == LUA_TTABLE) bi = lua_gettop(L);
  else lua_pop(L, 1);
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


/* The answers recorded for rp's waits, by path, pushed; 0 (nothing
   pushed) when there are none. */
static int push_recorded_answers(lua_State *L, const sl_store_replay *rp) {
  int ai = 0;
  for (int i = 0; i < sl_store_replay_nwaits(rp); i++) {
    const sl_store_wait *w = sl_store_replay_wait(rp, i);
    if (w->answer == NULL) continue;
    if (ai == 0) {
      lua_newtable(L);
      ai = lua_gettop(L);
    }
    if (sl_json_decode(L, w->answer, strlen(w->answer)) != 0) lua_error(L);
    lua_setfield(L, ai, w->path);
  }
  return ai;
}

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
  int timed_out = paused && due > 0 && due <= sl_durable_wall_ms();
  int nopen = 0, nbreaks = 0;
  if (paused) count_open(L, e, id, &nopen, &nbreaks);
  /* Only breakpoints wait: a resume goes on without an answer. */
  int at_breaks = paused && nopen > 0 && nopen == nbreaks;
  if (paused && !timed_out && !at_breaks && (ii == 0 || lua_isnil(L, ii))) {
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
  int bki;
  int bi = apply_options(L, e, id, top + 6, &bki);
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
  if (ai == 0) ai = push_recorded_answers(L, *box);
  sl_run_opts o = {bi, id, ai, epoch + 1, box, 0, bki};
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
  int bki;
  int bi = apply_options(L, e, id, top + 6, &bki);
  sl_run_opts o = {bi, id, answered ? ai : 0, epoch, box, park_after_ms, bki};
  sl_run *r = sl_run_launch(L, h, si, in, &o);
  /* Only the run is left, where the box and the row's strings were. */
  lua_replace(L, top);
  lua_settop(L, top);
  return r;
}

/*
** {======================================================
** Forking a stored run
** =======================================================
*/

/* Does the execution at path a come before the one at f, in the order of
   the run's tree (an earlier sibling of f or of one of its ancestors, or
   below one)? Neither f, its ancestors nor what is below it do. Paths
   compare by their ordinals; what follows them ("@before", a sleep's
   "/s1.2") is not an ordinal. */
static int precedes(const char *a, const char *f) {
  for (;;) {
    if (*a < '0' || *a > '9' || *f < '0' || *f > '9') return 0;
    char *ea, *ef;
    long x = strtol(a, &ea, 10), y = strtol(f, &ef, 10);
    if (x != y) return x < y;
    if (*ea != '/' || *ef != '/') return 0;   /* an ancestor, f itself, or below f */
    a = ea + 1;
    f = ef + 1;
  }
}

static int run_box_gc(lua_State *L) {
  sl_store_run **box = lua_touserdata(L, 1);
  sl_store_run_free(*box);
  *box = NULL;
  return 0;
}

/* Is the execution at path a (a wait's path may end in "@before" or
   "@after") an ancestor of the one at f? */
static int is_ancestor(const char *a, const char *f) {
  const char *at = strchr(a, '@');
  size_t n = at ? (size_t)(at - a) : strlen(a);
  return strncmp(a, f, n) == 0 && f[n] == '/';
}

/* Raises for a fork from a path the run has no execution at, naming the
   nearest paths it has. */
static void no_such_path(lua_State *L, const char *id, const char *from,
                         const sl_store_replay *rp) {
  const char *paths[64];
  size_t n = 0;
  for (int i = 0; i < sl_store_replay_nsteps(rp) && n < 64; i++) {
    const sl_store_checkpoint *cp = sl_store_replay_step_at(rp, i);
    if (cp != NULL && (cp->kind == NULL || strcmp(cp->kind, "sleep") != 0))
      paths[n++] = cp->path;
  }
  const char *best = sl_suggest(from, paths, n);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n && i < 12; i++) {
    if (i) luaL_addstring(&b, ", ");
    luaL_addstring(&b, paths[i]);
  }
  if (n > 12) luaL_addstring(&b, ", ...");
  luaL_pushresult(&b);
  if (best != NULL)
    luaL_error(L, "run %s has no step execution at path '%s' (did you mean '%s'? "
                  "its paths: %s)", id, from, best, lua_tostring(L, -1));
  luaL_error(L, "run %s has no step execution at path '%s' (its paths: %s)", id, from,
             lua_tostring(L, -1));
}

/* The options of the fork: the old run's, and where it came from. */
static const char *fork_options(lua_State *L, const char *old, const char *id,
                                const char *from) {
  if (old != NULL && sl_json_decode(L, old, strlen(old)) == 0 && lua_istable(L, -1)) {
    /* options */
  } else {
    if (old != NULL) lua_pop(L, 1);
    lua_newtable(L);
  }
  lua_createtable(L, 0, 2);
  lua_pushstring(L, id);
  lua_setfield(L, -2, "run_id");
  lua_pushstring(L, from);
  lua_setfield(L, -2, "path");
  lua_setfield(L, -2, "fork");
  sl_buf b;
  sl_buf_init(&b);
  char err[200];
  if (sl_json_encode(L, -1, &b, 0, err, sizeof err) != 0) {
    sl_buf_free(&b);
    luaL_error(L, "the options of run %s cannot be copied: %s", id, err);
  }
  lua_pop(L, 1);
  lua_pushlstring(L, b.data, b.len);
  sl_buf_free(&b);
  return lua_tostring(L, -1);
}

sl_run *sl_fork(lua_State *L, sl_host *h, const char *id, const char *from, int ii,
                int sti, int force) {
  sl_core *e = &h->core;
  if (e->store == NULL || e->writer == NULL) luaL_error(L, "cannot fork: the engine has no store");
  ii = ii ? lua_absindex(L, ii) : 0;
  sti = sti ? lua_absindex(L, sti) : 0;
  if (sti && !lua_isnil(L, sti) && !lua_istable(L, sti))
    luaL_error(L, "the state to fork with must be a JSON object, got %s", luaL_typename(L, sti));
  int top = lua_gettop(L);
  sl_store_run *row;
  int rc = sl_store_run_get(e->store, id, &row);
  if (rc == SL_STORE_ENOTFOUND)
    luaL_error(L, "no run with id '%s' in %s", id, sl_store_path(e->store));
  if (rc != 0) luaL_error(L, "%s", sl_store_errmsg(e->store));
  sl_store_run *old = sl_store_copy_run(row);
  sl_store_run_free(row);
  if (old == NULL) luaL_error(L, "not enough memory to fork run %s", id);
  /* Held by a box from here: a raise frees it with the record. */
  sl_store_run **rbox = lua_newuserdatauv(L, sizeof *rbox, 0);
  *rbox = old;
  lua_newtable(L);
  lua_pushcfunction(L, run_box_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  sl_store_replay **box = push_replay_box(L, NULL);
  if (sl_store_replay_read(e->store, id, box) != 0) luaL_error(L, "%s", sl_store_errmsg(e->store));
  const sl_store_checkpoint *at = sl_store_replay_step(*box, from);
  if (at == NULL || (at->kind != NULL && strcmp(at->kind, "sleep") == 0))
    no_such_path(L, id, from, *box);
  if (old->file == NULL)
    luaL_error(L, "run %s was not started from a pipeline file, so it cannot be forked", id);
  char nid[32];
  sl_run_new_id(h, nid);
  sl_store_run nr;
  memset(&nr, 0, sizeof nr);
  nr.id = nid;
  nr.pipeline = old->pipeline;
  nr.file = old->file;
  nr.def_hash = old->def_hash;
  nr.status = "interrupted";
  nr.input = old->input;
  nr.options = fork_options(L, old->options, id, from);
  nr.started_ms = sl_owner_now_ms();
  sl_store *s = e->store;
  /* What the old run completed before the fork path, as the new run's. */
  rc = sl_store_run_begin(s, &nr);
  for (int i = 0; rc == 0 && i < sl_store_replay_nsteps(*box); i++) {
    const sl_store_checkpoint *cp = sl_store_replay_step_at(*box, i);
    if (cp == NULL || strcmp(cp->status, "completed") != 0 || !precedes(cp->path, from))
      continue;
    sl_store_checkpoint c = *cp;
    c.run_id = nid;
    c.owner = NULL;
    c.epoch = 0;
    rc = sl_store_checkpoint_put(s, &c);
  }
  for (int i = 0; rc == 0 && i < sl_store_replay_nwaits(*box); i++) {
    const sl_store_wait *w = sl_store_replay_wait(*box, i);
    /* Answers given before the fork path, and to its ancestors (which
       run again, and would ask again). */
    if (w->answer == NULL || !(precedes(w->path, from) || is_ancestor(w->path, from)))
      continue;
    sl_store_wait c = *w;
    c.run_id = nid;
    rc = sl_store_wait_put(s, &c);
    if (rc == 0) rc = sl_store_wait_answer(s, nid, w->path, w->answer);
  }
  int edits = (ii && !lua_isnil(L, ii)) || (sti && !lua_isnil(L, sti));
  if (rc == 0 && edits) {
    /* The edits, as the answer of a breakpoint before the fork path. */
    char path[520];
    snprintf(path, sizeof path, "%s@before", from);
    lua_createtable(L, 0, 3);
    if (ii && !lua_isnil(L, ii)) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "replace");
      lua_pushvalue(L, ii);
      lua_setfield(L, -2, "value");
    } else {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "continue");
    }
    if (sti && !lua_isnil(L, sti)) {
      lua_pushvalue(L, sti);
      lua_setfield(L, -2, "state");
    }
    sl_buf b;
    sl_buf_init(&b);
    char err[200];
    if (sl_json_encode(L, -1, &b, 0, err, sizeof err) != 0) {
      sl_buf_free(&b);
      luaL_error(L, "the edits cannot be stored as JSON: %s", err);
    }
    sl_store_wait w;
    memset(&w, 0, sizeof w);
    w.run_id = nid;
    w.path = path;
    w.message = "the edits this run was forked with";
    w.created_ms = nr.started_ms;
    rc = sl_store_wait_put(s, &w);
    if (rc == 0) rc = sl_store_wait_answer(s, nid, path, b.data);
    sl_buf_free(&b);
  }
  if (rc == 0) rc = sl_store_flush(s);
  if (rc != 0) luaL_error(L, "cannot fork run %s: %s", id, sl_store_errmsg(s));
  lua_settop(L, top);
  lua_pushstring(L, nid);
  sl_run *r = sl_resume(L, h, lua_tostring(L, -1), 0, force);
  lua_remove(L, -2);
  return r;
}

/* }====================================================== */
