/*
** Processes. ctx:exec(argv, opts) spawns a program with uv_spawn in a
** process group of its own, feeds it its stdin, captures its stdout and
** stderr up to a bound, and suspends the calling step until the program
** has exited and its output is read (the output of a program that exited
** normally is read to its end, even from descendants still holding it).
**
** A proc block owns every handle of one execution and is freed by the last
** of their close callbacks. The step it serves is linked to it by p->t
** until the result is delivered or the step is cancelled; from then on
** nothing touches the step again. A process is never abandoned unreaped:
** its handle stays open until its exit callback, so cancelling a step
** kills the process (and its group) and libuv still collects it.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>

#include "exec.h"
#include "clock.h"
#include "ctx.h"
#include "error.h"
#include "lifecycle.h"
#include "protect.h"
#include "scheduler.h"
#include "value.h"
#include "plan.h"
#include "suggest.h"

extern char **environ;

/* Default bound on each captured stream. */
#define DEFAULT_MAX_OUTPUT ((lua_Integer)8 << 20)
/* The largest bound accepted: a capture never needs more than this. */
#define MAX_MAX_OUTPUT ((lua_Integer)1 << 40)

/* Why an execution failed, once it has. */
enum { EXEC_OK, EXEC_TIMEOUT, EXEC_OVERFLOW, EXEC_NOMEM };

typedef struct proc proc;

/* One captured output stream. */
typedef struct capture {
  uv_pipe_t pipe;
  sl_buf buf;
  unsigned char open;        /* still reading: end of file not yet seen */
} capture;

struct proc {
  sl_core *e;
  sl_exec *t;                /* the waiting step; NULL once it no longer waits */
  uv_process_t process;
  capture out, err;
  uv_poll_t in_poll;         /* feeds stdin, when the caller gave some */
  uv_timer_t timer;          /* the timeout, when the caller gave one */
  int in_fd;                 /* our end of the stdin socket pair, or -1 */
  size_t in_len, in_off;
  size_t max_output;
  double timeout;
  int nhandles;              /* handles not yet closed: the block is freed at 0 */
  int failure;               /* EXEC_* */
  const char *over;          /* the stream that exceeded max_output */
  int64_t exit_status;
  int term_signal;
  int pid;
  unsigned char exited;
  unsigned char killed;      /* the engine sent it SIGKILL */
  char name[64];             /* argv[0], for messages */
  char where[192];           /* the ctx:exec call, for errors */
  char in_data[];            /* the stdin bytes */
};

/* Shared helpers of the I/O services. */

void sl_io_check_options(lua_State *L, int arg, const char *const names[]) {
  arg = lua_absindex(L, arg);
  lua_pushnil(L);
  while (lua_next(L, arg)) {
    lua_pop(L, 1);                                      /* key */
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_argerror(L, arg, lua_pushfstring(L, "option names must be "
                    "strings, got %s", luaL_typename(L, -1)));
    const char *k = lua_tostring(L, -1);
    size_t n = 0;
    int known = 0;
    for (; names[n] != NULL; n++) known = known || strcmp(k, names[n]) == 0;
    if (known) continue;
    const char *best = sl_suggest(k, (const char *const *)names, n);
    if (best != NULL)
      lua_pushfstring(L, "unknown option '%s' (did you mean '%s'?)", k, best);
    else
      lua_pushfstring(L, "unknown option '%s'", k);
    luaL_argerror(L, arg, lua_tostring(L, -1));
  }
}

void sl_io_where(lua_State *L, char *out, size_t size) {
  size_t len;
  luaL_where(L, 1);
  const char *s = lua_tolstring(L, -1, &len);
  if (len >= 2 && s[len - 2] == ':') len -= 2;          /* drop ": " */
  snprintf(out, size, "%.*s", (int)len, s);
  lua_pop(L, 1);
}

const char *sl_io_step_name(sl_exec *x) {
  return x != NULL && x->plan != NULL ? x->plan->name : NULL;
}

/* Handles. */

static void on_closed(uv_handle_t *h) {
  proc *p = h->data;
  sl_core *e = p->e;
  if (h == (uv_handle_t *)&p->in_poll) {
    close(p->in_fd);                   /* the program sees the end of its input */
    p->in_fd = -1;
  }
  if (--p->nhandles == 0) {
    sl_buf_free(&p->out.buf);
    sl_buf_free(&p->err.buf);
    free(p);
  }
  sl_handles_closed(e->handles);
}

/* Counts a handle just initialized as one the block owns. */
static void opened(proc *p, uv_handle_t *h) {
  h->data = p;
  p->nhandles++;
  sl_handles_opened(p->e->handles);
}

/* Closes h if it was initialized and is not closing already. */
static void close_handle(uv_handle_t *h) {
  if (h->type != UV_UNKNOWN_HANDLE && !uv_is_closing(h))
    uv_close(h, on_closed);
}

/* Closes every handle but the process, which must stay open until it has
   been reaped; and that one too once it has. */
static void close_all(proc *p) {
  close_handle((uv_handle_t *)&p->out.pipe);
  close_handle((uv_handle_t *)&p->err.pipe);
  close_handle((uv_handle_t *)&p->in_poll);
  close_handle((uv_handle_t *)&p->timer);
  if (p->exited || !uv_is_active((uv_handle_t *)&p->process))
    close_handle((uv_handle_t *)&p->process);
  if (p->in_fd >= 0 && p->in_poll.type == UV_UNKNOWN_HANDLE) {
    close(p->in_fd);
    p->in_fd = -1;
  }
}

/* Kills the program and everything in its process group (it leads one:
   it was spawned detached, in a session of its own). */
static void kill_group(proc *p) {
  if (p->exited || p->pid <= 0) return;
  uv_kill(-p->pid, SIGKILL);
  uv_process_kill(&p->process, SIGKILL);
  p->killed = 1;
}

/* Results. */

static void push_failure(lua_State *L, proc *p) {
  char msg[512];
  const char *kind = "error";
  switch (p->failure) {
    case EXEC_TIMEOUT:
      kind = "timeout";
      snprintf(msg, sizeof msg, "command '%s' (pid %d) timed out after %g s "
               "and was killed", p->name, p->pid, p->timeout);
      break;
    case EXEC_OVERFLOW:
      snprintf(msg, sizeof msg, "the %s of command '%s' (pid %d) exceeded "
               "%zu bytes (max_output); the command was killed", p->over,
               p->name, p->pid, p->max_output);
      break;
    default:
      snprintf(msg, sizeof msg, "not enough memory for the output of "
               "command '%s' (pid %d)%s", p->name, p->pid,
               p->killed ? "; the command was killed" : "");
      break;
  }
  sl_error_push(L, kind, msg, sl_io_step_name(p->t), p->where[0] ? p->where : NULL);
}

/* Builds the outcome on the engine's thread, moves (ok, value) onto the
   step's coroutine and queues the step. Runs under a protected call. */
static int deliver_p(lua_State *L) {
  proc *p = lua_touserdata(L, 1);
  sl_exec *t = p->t;
  if (!lua_checkstack(t->task.co, 2)) return luaL_error(L, "not enough memory");
  lua_pushboolean(L, p->failure == EXEC_OK);
  if (p->failure != EXEC_OK) {
    push_failure(L, p);
  } else {
    lua_createtable(L, 0, 4);
    if (p->term_signal != 0) {
      lua_pushinteger(L, p->term_signal);
      lua_setfield(L, -2, "signal");
    } else {
      lua_pushinteger(L, (lua_Integer)p->exit_status);
      lua_setfield(L, -2, "code");
    }
    lua_pushlstring(L, p->out.buf.data ? p->out.buf.data : "", p->out.buf.len);
    lua_setfield(L, -2, "stdout");
    lua_pushlstring(L, p->err.buf.data ? p->err.buf.data : "", p->err.buf.len);
    lua_setfield(L, -2, "stderr");
  }
  lua_xmove(L, t->task.co, 2);
  p->t = NULL;
  t->task.wait_cancel = NULL;     /* done: a cancel before it resumes has nothing to stop */
  sl_task_wake(&t->task, 2);
  return 0;
}

/* Ends the execution for the step waiting on it: releases the handles and
   resumes the step with its result or error. */
static void finish(proc *p) {
  sl_core *e = p->e;
  close_all(p);
  if (sl_protect(e->L, deliver_p, p, e->errmsg, sizeof e->errmsg) != LUA_OK && p->t != NULL) {
    /* The output did not fit in memory, most likely: let go of it and
       raise that in the step instead; fail the run only if even that
       cannot be done. */
    sl_buf_free(&p->out.buf);
    sl_buf_free(&p->err.buf);
    p->failure = EXEC_NOMEM;
    if (sl_protect(e->L, deliver_p, p, e->errmsg, sizeof e->errmsg) != LUA_OK && p->t != NULL) {
      sl_exec *t = p->t;
      p->t = NULL;
      t->task.wait_cancel = NULL;
      sl_step_stop_run(t->run, "error", e->errmsg);
    }
  }
  sl_sched_drain(&e->sched);
}

/* Finishes once everything the outcome depends on has happened: the exit,
   and the end of both outputs unless the execution already failed. */
static void settle(proc *p) {
  if (p->t == NULL || !p->exited) return;
  if (p->failure == EXEC_OK && (p->out.open || p->err.open)) return;
  finish(p);
}

static void fail(proc *p, int why) {
  if (p->failure != EXEC_OK) return;
  p->failure = why;
  kill_group(p);
  settle(p);
}

/* Callbacks. */

static void on_process_exit(uv_process_t *h, int64_t status, int sig) {
  proc *p = h->data;
  p->exited = 1;
  p->exit_status = status;
  p->term_signal = sig;
  if (p->t == NULL) close_all(p);
  else settle(p);
}

static capture *capture_of(proc *p, uv_handle_t *h) {
  return h == (uv_handle_t *)&p->out.pipe ? &p->out : &p->err;
}

/* Hands libuv the free room of the capture buffer, growing it
   geometrically, never beyond one byte past the bound: reading that byte
   is how crossing the bound is seen. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  proc *p = h->data;
  sl_buf *b = &capture_of(p, h)->buf;
  size_t room = p->max_output + 1 - b->len;
  size_t want = b->len < 4096 ? 4096 : b->len;
  if (want > room) want = room;
  buf->base = NULL;
  buf->len = 0;
  if (sl_buf_reserve(b, want) != 0) return;
  buf->base = b->data + b->len;
  buf->len = b->cap - b->len - 1;
  if (buf->len > room) buf->len = room;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  proc *p = s->data;
  capture *c = capture_of(p, (uv_handle_t *)s);
  if (nread == 0) return;
  if (nread > 0) {
    c->buf.len += (size_t)nread;
    c->buf.data[c->buf.len] = '\0';
    if (c->buf.len <= p->max_output) return;
    c->buf.len = p->max_output;
    p->over = c == &p->out ? "stdout" : "stderr";
  }
  /* End of file, a read error, or no more wanted: nothing more comes. */
  c->open = 0;
  close_handle((uv_handle_t *)s);
  if (nread == UV_ENOBUFS) fail(p, EXEC_NOMEM);
  else if (nread > 0) fail(p, EXEC_OVERFLOW);
  else settle(p);
}

/* Writes stdin as the socket takes it. send() with MSG_NOSIGNAL, unlike
   write(), cannot raise SIGPIPE in the engine's process when the program
   stops reading; that is not an error, as for a shell pipeline. */
static void on_writable(uv_poll_t *h, int status, int events) {
  proc *p = h->data;
  while (status == 0 && p->in_off < p->in_len) {
    ssize_t n = send(p->in_fd, p->in_data + p->in_off, p->in_len - p->in_off,
                     MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p->in_off += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return;
    } else {
      break;
    }
  }
  close_handle((uv_handle_t *)h);       /* closes the socket: end of input */
}

static void on_timeout(uv_timer_t *h) {
  proc *p = h->data;
  if (p->exited && p->failure == EXEC_OK) {
    /* The program is gone; what still holds its output is in its group. */
    p->failure = EXEC_TIMEOUT;
    uv_kill(-p->pid, SIGKILL);
    settle(p);
    return;
  }
  fail(p, EXEC_TIMEOUT);
}

/* The step was cancelled (by its parent, a timeout or the engine shutting
   down): kill the program and let go of the step. */
static void exec_cancel(sl_task *t, void *data) {
  proc *p = data;
  (void)t;
  p->t = NULL;
  kill_group(p);
  close_all(p);
}

/* The Lua side. */

static int exec_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  if (!lua_toboolean(L, -2)) return lua_error(L);
  return 1;
}

static const char *const exec_options[] = {
  "stdin", "env", "cwd", "timeout", "max_output", NULL
};

static int opt_error(lua_State *L, const char *opt, const char *expected) {
  return luaL_argerror(L, 3, lua_pushfstring(L, "option '%s' must be %s, got %s",
                       opt, expected, luaL_typename(L, -1)));
}

/* Checks argv at index 2 and returns its length. */
static int check_argv(lua_State *L) {
  if (!lua_istable(L, 2))
    luaL_argerror(L, 2, lua_pushfstring(L, "list of strings expected, got %s",
                  luaL_typename(L, 2)));
  lua_Integer n = luaL_len(L, 2);
  if (n < 1) luaL_argerror(L, 2, "the argument list is empty");
  if (n > 100000) luaL_argerror(L, 2, "too many arguments");
  for (lua_Integer i = 1; i <= n; i++) {
    size_t len;
    if (lua_rawgeti(L, 2, i) != LUA_TSTRING)
      luaL_argerror(L, 2, lua_pushfstring(L, "item %d must be a string, got %s",
                    (int)i, luaL_typename(L, -1)));
    const char *s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len)
      luaL_argerror(L, 2, lua_pushfstring(L, "item %d contains a zero byte", (int)i));
    if (i == 1 && len == 0) luaL_argerror(L, 2, "the program name is empty");
    lua_pop(L, 1);
  }
  return (int)n;
}

#define SECRETS_KEY "sluice.secret_env"

void sl_exec_secret(lua_State *L, const char *name) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, SECRETS_KEY) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, SECRETS_KEY);
  }
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

/* Pushes the environment for the program as a userdata array of
   "NAME=value" pointers: the engine's own, less the secret variables (an
   agent's API key), with the names of the table at env (0 for none)
   overridden (a string), removed (false) or, for a secret, passed on
   (true). The strings are anchored in the table at anchor. */
static char **push_env(lua_State *L, int env, int anchor) {
  int extra = 0, n0 = 0;
  lua_getfield(L, LUA_REGISTRYINDEX, SECRETS_KEY);      /* secrets|nil */
  int secrets = lua_gettop(L);
  if (env == 0) {
    lua_newtable(L);
    env = lua_gettop(L);
  }
  lua_pushnil(L);
  while (lua_next(L, env)) {
    size_t klen, vlen = 0;
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_argerror(L, 3, lua_pushfstring(L, "env: variable names must be "
                    "strings, got %s", luaL_typename(L, -2)));
    const char *k = lua_tolstring(L, -2, &klen);
    if (klen == 0 || strchr(k, '=') != NULL || strlen(k) != klen)
      luaL_argerror(L, 3, lua_pushfstring(L, "env: bad variable name '%s'", k));
    if (lua_type(L, -1) == LUA_TSTRING) {
      const char *v = lua_tolstring(L, -1, &vlen);
      if (strlen(v) != vlen)
        luaL_argerror(L, 3, lua_pushfstring(L, "env: the value of '%s' "
                      "contains a zero byte", k));
      extra++;
    } else if (lua_type(L, -1) != LUA_TBOOLEAN) {
      luaL_argerror(L, 3, lua_pushfstring(L, "env: the value of '%s' must be "
                    "a string, true (pass on the engine's) or false, got %s", k,
                    luaL_typename(L, -1)));
    }
    lua_pop(L, 1);
  }
  while (environ[n0] != NULL) n0++;
  char **envp = lua_newuserdatauv(L, (size_t)(n0 + extra + 1) * sizeof *envp, 0);
  int n = 0;
  for (int i = 0; i < n0; i++) {
    const char *eq = strchr(environ[i], '=');
    size_t len = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
    lua_pushlstring(L, environ[i], len);
    lua_pushvalue(L, -1);
    int named = lua_rawget(L, env);                     /* name how */
    int passed = named == LUA_TBOOLEAN && lua_toboolean(L, -1);
    int secret = 0;
    if (named == LUA_TNIL && lua_istable(L, secrets)) {
      lua_pushvalue(L, -2);
      secret = lua_rawget(L, secrets) != LUA_TNIL;
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
    if (passed || (named == LUA_TNIL && !secret)) envp[n++] = environ[i];
  }
  lua_pushnil(L);
  while (lua_next(L, env)) {
    if (lua_type(L, -1) == LUA_TSTRING) {
      lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
      envp[n++] = (char *)lua_tostring(L, -1);
      lua_rawseti(L, anchor, n);
    }
    lua_pop(L, 1);
  }
  envp[n] = NULL;
  return envp;
}

/* Raises the error table for a program that could not be started. */
static int spawn_error(lua_State *L, sl_exec *t, const char *where,
                       const char *name, const char *cwd, int rc) {
  if (cwd != NULL)
    lua_pushfstring(L, "cannot run '%s' in directory '%s': %s", name, cwd,
                    uv_strerror(rc));
  else
    lua_pushfstring(L, "cannot run '%s': %s", name, uv_strerror(rc));
  sl_error_push(L, "error", lua_tostring(L, -1), sl_io_step_name(t),
                where[0] ? where : NULL);
  return lua_error(L);
}

/*
** ctx:exec(argv[, opts]): runs argv[1] (searched in PATH) with the
** arguments argv[2..] and returns {code, signal, stdout, stderr}: code is
** the exit status (nil when a signal killed the program), signal the
** signal that did (nil otherwise). opts: stdin (a string fed to the
** program; /dev/null when absent), env (a table of variables added to the
** engine's environment, false removing one), cwd, timeout (seconds; the
** program is killed and the call raises kind "timeout"), max_output (bytes
** kept of each stream, 8 MiB when absent; exceeding it kills the program and
** raises). A program that exits non-zero is not an error here.
*/
static int ctx_exec(lua_State *L) {
  sl_exec *t = sl_ctx_check(L, 1);
  sl_core *e = sl_core_of(t);
  lua_settop(L, 3);
  int argc = check_argv(L);
  const char *in = NULL, *cwd = NULL;
  size_t in_len = 0;
  double timeout = 0;
  lua_Integer max_output = DEFAULT_MAX_OUTPUT;
  char **envp = NULL;
  if (!lua_isnoneornil(L, 3)) {
    luaL_argexpected(L, lua_istable(L, 3), 3, "table of options");
    sl_io_check_options(L, 3, exec_options);
    if (lua_getfield(L, 3, "stdin") != LUA_TNIL) {
      if (lua_type(L, -1) != LUA_TSTRING) opt_error(L, "stdin", "a string");
      in = lua_tolstring(L, -1, &in_len);
    }
    if (lua_getfield(L, 3, "cwd") != LUA_TNIL) {
      size_t len;
      if (lua_type(L, -1) != LUA_TSTRING) opt_error(L, "cwd", "a string");
      cwd = lua_tolstring(L, -1, &len);
      if (len == 0 || strlen(cwd) != len) opt_error(L, "cwd", "a directory name");
    }
    if (lua_getfield(L, 3, "timeout") != LUA_TNIL) {
      lua_Number s = lua_tonumber(L, -1);
      if (lua_type(L, -1) != LUA_TNUMBER || !(s > 0) || s > 1e9)
        opt_error(L, "timeout", "a positive number of seconds");
      timeout = (double)s;
    }
    if (lua_getfield(L, 3, "max_output") != LUA_TNIL) {
      int isint;
      max_output = lua_tointegerx(L, -1, &isint);
      if (!isint || max_output < 1 || max_output > MAX_MAX_OUTPUT)
        opt_error(L, "max_output", "a positive integer number of bytes");
    }
    if (lua_getfield(L, 3, "env") != LUA_TNIL) {
      if (!lua_istable(L, -1)) opt_error(L, "env", "a table");
      lua_newtable(L);                                  /* ... env anchor */
      envp = push_env(L, lua_gettop(L) - 1, lua_gettop(L));
    }
  }
  if (envp == NULL) {
    /* Without an env of its own a program still never sees a secret. */
    if (lua_getfield(L, LUA_REGISTRYINDEX, SECRETS_KEY) == LUA_TTABLE) {
      lua_newtable(L);                                  /* ... secrets anchor */
      envp = push_env(L, 0, lua_gettop(L));
    }
  }
  const char **argv = lua_newuserdatauv(L, (size_t)(argc + 1) * sizeof *argv, 0);
  for (int i = 1; i <= argc; i++) {
    lua_rawgeti(L, 2, i);
    argv[i - 1] = lua_tostring(L, -1);        /* anchored by the argv table */
    lua_pop(L, 1);
  }
  argv[argc] = NULL;
  sl_task_check_suspend(L, &t->task);
  if (e->closing) return luaL_error(L, "the engine is shutting down");
  char where[192];
  sl_io_where(L, where, sizeof where);

  /* From here on the block owns what is made, and is released through the
     close callbacks of its handles. */
  proc *p = calloc(1, sizeof *p + in_len);
  if (p == NULL) return luaL_error(L, "not enough memory to run '%s'", argv[0]);
  p->e = e;
  p->in_fd = -1;
  p->in_len = in_len;
  if (in_len > 0) memcpy(p->in_data, in, in_len);
  p->max_output = (size_t)max_output;
  p->timeout = timeout;
  snprintf(p->name, sizeof p->name, "%s", argv[0]);
  memcpy(p->where, where, sizeof p->where);
  int child_in = -1;
  if (in_len > 0) {
    int fds[2];
    int rc = uv_socketpair(SOCK_STREAM, 0, fds, UV_NONBLOCK_PIPE, 0);
    if (rc != 0) {
      free(p);
      return luaL_error(L, "cannot make a pipe for the input of '%s': %s",
                        argv[0], uv_strerror(rc));
    }
    p->in_fd = fds[0];
    child_in = fds[1];
  }
  uv_pipe_init(e->loop, &p->out.pipe, 0);
  opened(p, (uv_handle_t *)&p->out.pipe);
  uv_pipe_init(e->loop, &p->err.pipe, 0);
  opened(p, (uv_handle_t *)&p->err.pipe);

  uv_stdio_container_t stdio[3];
  stdio[0].flags = child_in >= 0 ? UV_INHERIT_FD : UV_IGNORE;
  stdio[0].data.fd = child_in;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&p->out.pipe;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&p->err.pipe;
  uv_process_options_t o;
  memset(&o, 0, sizeof o);
  o.exit_cb = on_process_exit;
  o.file = argv[0];
  o.args = (char **)argv;
  o.env = envp;
  o.cwd = cwd;
  o.flags = UV_PROCESS_DETACHED;
  o.stdio_count = 3;
  o.stdio = stdio;
  int rc = uv_spawn(e->loop, &p->process, &o);
  opened(p, (uv_handle_t *)&p->process);
  if (child_in >= 0) close(child_in);
  p->pid = p->process.pid;
  if (rc == 0) {
    p->out.open = p->err.open = 1;
    rc = uv_read_start((uv_stream_t *)&p->out.pipe, on_alloc, on_read);
    if (rc == 0) rc = uv_read_start((uv_stream_t *)&p->err.pipe, on_alloc, on_read);
    if (rc == 0 && p->in_fd >= 0) {
      rc = uv_poll_init_socket(e->loop, &p->in_poll, p->in_fd);
      if (rc == 0) {
        opened(p, (uv_handle_t *)&p->in_poll);
        rc = uv_poll_start(&p->in_poll, UV_WRITABLE, on_writable);
      }
    }
    if (rc == 0 && timeout > 0) {
      uv_timer_init(e->loop, &p->timer);
      opened(p, (uv_handle_t *)&p->timer);
      rc = sl_timer_start(&p->timer, on_timeout, (uint64_t)(timeout * 1000.0 + 0.5), 0);
    }
  }
  if (rc != 0) {
    kill_group(p);          /* a program started before the failure dies */
    close_all(p);
    return spawn_error(L, t, where, argv[0], cwd, rc);
  }
  p->t = t;
  return sl_task_suspend_io(L, &t->task, exec_cancel, p, exec_k, 0);
}

static const luaL_Reg exec_methods[] = {
  {"exec", ctx_exec},
  {NULL, NULL}
};

void sl_exec_open(lua_State *L, sl_core *e) {
  sl_ctx_register(L, e, exec_methods);
}
