/*
** The sluice command. Like lua.c, main does little but run cli_main under
** lua_pcall, so that no error can escape as a crash; the signal handler
** only asks the loop to cancel the run. Output goes to stdout as JSON,
** messages to stderr.
*/
#define _GNU_SOURCE   /* memmem */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "engine.h"
#include "clock.h"
#include "lifecycle.h"
#include "loader.h"
#include "memory.h"
#include "protect.h"
#include "quota.h"
#include "reload.h"
#include "result.h"
#include "record.h"
#include "resume.h"
#include "run.h"
#include "suggest.h"
#include "owner.h"
#include "ui.h"
#include "worker.h"
#include "value.h"

/* Exit codes (SPEC.md). */
#define EXIT_COMPLETED 0
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_PAUSED 3
#define EXIT_INTERRUPTED 130

#define CLI_MAX_REPEAT 32

typedef struct cli_opt {
  const char *name;      /* "--input" */
  int takes_value;       /* 1: a value; 2: a value, and may be repeated
                            (each kept in the cli's repeated list) */
  const char *value;     /* set by parsing; "1" for flags; the last given */
} cli_opt;

typedef struct cli cli;
static void dev_start(cli *c);
static int finish_run(lua_State *L, cli *c, int json);
static void open_store(lua_State *L, cli *c, const char *flag);
static void start_sigint(cli *c);
static void open_trace(lua_State *L, cli *c, const char *path);
static void open_exporter(lua_State *L, cli *c, const char *url);
static int load_only_p(lua_State *L);

struct cli {
  int argc;
  char **argv;
  int code;              /* exit code cli_main decided */
  const char *command;
  const char *file;
  const char *repeated[CLI_MAX_REPEAT];   /* the values of a repeated option */
  int nrepeated;
  sl_engine *e;
  sl_run *run;
  int interrupted;
  uv_signal_t sigint;
  /* sluice dev */
  const char *pipeline;
  int ref_input;           /* the decoded --input, reused by every run */
  int runs;                /* runs started so far */
  int ref_run;             /* the dev run in flight */
  uv_timer_t progress;     /* redraws the progress line on a terminal */
  int progress_shown;
};

static const char *usage_main =
  "usage: sluice <command> [options]\n"
  "\n"
  "commands:\n"
  "  run FILE     run a pipeline and print its output as JSON\n"
  "  dev FILE     run a pipeline again each time its files change\n"
  "  resume ID    continue a paused or interrupted run\n"
  "  fork ID      run again from one step of a stored run, with edits\n"
  "  runs         list stored runs (runs prune: delete old ones)\n"
  "  store check|vacuum|stats  look after the store\n"
  "  show ID      show one run's step history\n"
  "  submit FILE  queue a run for a worker and print its id\n"
  "  worker       execute queued runs until stopped\n"
  "  wait ID      wait for a run to end and print its output\n"
  "  ui           serve a web page of the runs, live, on 127.0.0.1\n"
  "  check FILE   check a pipeline file without running it\n"
  "  graph FILE   draw a pipeline for Mermaid or Graphviz\n"
  "  cache stats|clear  the persistent step cache\n"
  "  help [CMD]   show help for a command\n"
  "  version      print the version\n"
  "\n"
  "Exit codes: 0 completed, 1 run failed or cancelled, 2 bad invocation,\n"
  "script or input, 3 paused waiting for input, 130 interrupted.\n";

static const char *usage_run =
  "usage: sluice run FILE [--input JSON|@FILE|-] [--pipeline NAME] [--json]\n"
  "                 [--memory-limit MB] [--budget cost=0.5,tokens=20000,requests=100]\n"
  "                 [--store PATH] [--trace FILE] [--otlp URL] [--break STEP]...\n"
  "\n"
  "Runs a pipeline from FILE and prints its output as JSON.\n"
  "  --input JSON     the pipeline's input: JSON text, @FILE to read a file,\n"
  "                   or - to read standard input (default: no input)\n"
  "  --pipeline NAME  the pipeline to run when FILE returns several\n"
  "  --json           print the whole result (run_id, status, output,\n"
  "                   error, usage, steps) instead of the output\n"
  "  --memory-limit MB  cap the memory of the engine's Lua state (in MB, or with\n"
  "                   a unit: 512KB, 64MB, 1GB); a step that\n"
  "                   allocates past it fails with kind \"limit\"\n"
  "  --budget DIMS    the run's budget, overriding the pipeline's: a step whose\n"
  "                   estimate does not fit fails with kind \"quota\"\n"
  "  --store PATH     where runs are recorded (default: SLUICE_STORE, else\n"
  "                   .sluice/state.db; :memory: for none)\n"
  "  --trace FILE     append one OpenTelemetry span per step execution (JSON lines)\n"
  "  --otlp URL       also export the spans over OTLP/HTTP to a collector (default:\n"
  "                   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT)\n"
  "  --break STEP     pause the run before each execution of the step named STEP\n"
  "                   (STEP:after: once it completed; STEP:both), as a human step\n"
  "                   does (exit 3); sluice resume goes on, --input replacing the\n"
  "                   step's input (before) or output (after). Repeatable.\n";

static const char *usage_dev =
  "usage: sluice dev FILE [--input JSON|@FILE|-] [--pipeline NAME] [--debounce MS]\n"
  "\n"
  "Runs a pipeline, then watches FILE and every file it imports and, on each\n"
  "save, reloads it and runs again. A file that does not load leaves the\n"
  "previous version in place and prints the error. Ctrl-C exits. Every step\n"
  "is cached by its definition and input, so only what an edit changed (and\n"
  "what depends on it) runs again.\n"
  "  --debounce MS    wait this long after the last change (default 20)\n";

static const char *usage_resume =
  "usage: sluice resume RUN_ID [--input JSON|@FILE|-] [--force] [--json] [--store PATH]\n"
  "\n"
  "Continues a paused or interrupted run. Steps that completed are not run\n"
  "again: their outputs and state come from the store.\n"
  "  --input JSON     the answer a paused run waits for (several waits: an\n"
  "                   object keyed by step name)\n"
  "  --force          resume even though the pipeline file changed\n"
  "  --json           print the whole result\n"
  "  --store PATH     the store (default: SLUICE_STORE or .sluice/state.db)\n";

static const char *usage_fork =
  "usage: sluice fork RUN_ID --from STEP_PATH [--input JSON|@FILE|-] [--state JSON]\n"
  "                  [--force] [--json] [--store PATH]\n"
  "\n"
  "Starts a new run of RUN_ID's pipeline file and input that has what RUN_ID\n"
  "completed before the step execution at STEP_PATH (the paths sluice show\n"
  "--json gives: 1/2/3), and runs from there. RUN_ID is unchanged; the new\n"
  "run says where it came from.\n"
  "  --from PATH      the step execution to run again, and all after it\n"
  "  --input JSON     that step's input instead of the one it had\n"
  "  --state JSON     an object whose fields are set in the run's state before it\n"
  "  --force          fork even though the pipeline file changed\n"
  "  --json           print the whole result\n"
  "  --store PATH     the store (default: SLUICE_STORE or .sluice/state.db)\n";

static const char *usage_runs =
  "usage: sluice runs [--status S] [--pipeline NAME] [--queue Q] [--limit N]\n"
  "                   [--before RUN_ID] [--json] [--store PATH]\n"
  "\n"
  "Lists stored runs, newest first: id, pipeline, status, started, duration, usage.\n"
  "  --queue Q        only runs submitted to queue Q, with what a queued one waits for\n"
  "  --limit N        at most N runs (default 50; 0 for all)\n"
  "  --before RUN_ID  only runs older than RUN_ID: the next page after a listing\n"
  "                   that ended with RUN_ID\n";

static const char *usage_prune =
  "usage: sluice runs prune [--older-than AGE] [--status S] [--keep N] [--pipeline NAME]\n"
  "                         [--json] [--store PATH]\n"
  "\n"
  "Deletes ended runs (completed, failed, cancelled; or those of --status)\n"
  "with their steps, waits and the values only they refer to.\n"
  "  --older-than AGE  only runs that ended more than AGE ago: 7d, 12h, 30m, 90s\n"
  "  --status S        only runs with this status\n"
  "  --keep N          keep the N newest runs (of --status, --pipeline) whatever their age\n"
  "  --pipeline NAME   only runs of this pipeline\n";

static const char *usage_store =
  "usage: sluice store check|vacuum|stats [--json] [--store PATH]\n"
  "\n"
  "  check   reads every page of the store and says what is damaged (exit 1)\n"
  "  vacuum  gives the space of deleted runs back to the file system\n"
  "  stats   runs, checkpoints, stored values and cache entries, with their bytes\n";

static const char *usage_show =
  "usage: sluice show RUN_ID [--json] [--timeline] [--store PATH]\n"
  "\n"
  "Shows one run: its status, usage, error, and the tree of its step\n"
  "executions with kind, status, attempts, time, cache hits and usage.\n"
  "--timeline draws each execution as a bar on the run's time axis.\n";

static const char *usage_ui =
  "usage: sluice ui [--store PATH|URL] [--host ADDR] [--port N]\n"
  "\n"
  "Serves a web page of the store's runs: each run's steps on a timeline\n"
  "with their inputs, outputs, errors, usage and logs, live while it runs,\n"
  "and a paused run's question with a form that answers it. Prints the\n"
  "page's URL first. --port 0 (the default) picks a free port; --host\n"
  "(default 127.0.0.1) other than a loopback address makes the store's\n"
  "contents visible to that network. The JSON API under /api/ is in the\n"
  "README. Stops on Ctrl-C.\n";

static const char *usage_submit =
  "usage: sluice submit FILE [--input JSON|@FILE|-] [--pipeline NAME]\n"
  "                    [--budget DIMS] [--queue Q] [--store PATH]\n"
  "\n"
  "Records a run of a pipeline in the store's queue Q (default \"default\") for\n"
  "a worker, with the file, its code version and the input, and prints the\n"
  "run's id. Nothing runs here: sluice worker executes it, sluice wait waits.\n";

static const char *usage_worker =
  "usage: sluice worker [--concurrency N] [--queue Q] [--store PATH] [--grace S]\n"
  "                    [--poll S] [--park-after S] [--until-idle]\n"
  "\n"
  "Executes runs submitted to queue Q (default \"default\"), oldest first, N at a\n"
  "time (default 1), and takes over runs whose worker died. A run begun on other\n"
  "code than this worker's copy of its file waits for a worker with its version\n"
  "(unless its pipeline says on_code_change = \"continue\"). SIGTERM or SIGINT\n"
  "stops claiming; runs still going after the grace period (default 30 s) are\n"
  "handed back to the queue, to go on from their last completed step.\n"
  "  --poll S        how often an idle worker looks for work (default 0.2)\n"
  "  --park-after S  a run whose durable wait (ctx:sleep, a person's timeout)\n"
  "                  is longer than S is parked (status waiting, its slot\n"
  "                  freed) and claimed again when due (default 5; 0: every\n"
  "                  such wait)\n"
  "  --until-idle    exit once the queue has nothing left for this worker\n";

static const char *usage_wait =
  "usage: sluice wait RUN_ID [--json] [--timeout S] [--store PATH]\n"
  "\n"
  "Waits for a run to end and prints its output as sluice run does, with the\n"
  "same exit codes (3: paused, waiting for input; 130: still running after\n"
  "--timeout, or interrupted). --json prints the run as sluice show --json.\n";

static const char *usage_graph =
  "usage: sluice graph FILE [--format mermaid|dot] [--pipeline NAME] [--tree]\n"
  "\n"
  "Draws the pipelines in FILE for Mermaid (default) or Graphviz as a flow:\n"
  "steps in the order they run, branches side by side between a fork and a\n"
  "join, a loop's way back, a dag's dependencies, fallbacks, each container\n"
  "as a group. --tree draws what contains what instead (kinds, names,\n"
  "nesting, branch, case and route labels).\n";

static const char *usage_cache =
  "usage: sluice cache stats [--json] [--store PATH]\n"
  "       sluice cache clear [--step NAME] [--store PATH]\n"
  "\n"
  "Shows or clears the persistent tier of the step cache, the one runs and\n"
  "processes share through the store.\n";

static const char *usage_check =
  "usage: sluice check FILE [--pipeline NAME]\n"
  "\n"
  "Loads FILE and checks every pipeline in it (every step's options and\n"
  "kind) without running anything. Prints \"ok\" and the pipelines' names.\n";

/* Raises a usage error: the message then exit code 2. */
/* Writes an error message to stderr as "sluice: ...": a message that names
   its command ("sluice show: ...") keeps it after the prefix; positions
   inside sluice's own Lua files or C functions, which say nothing to a
   user, are taken off the front (a user's file:line stays). */
static void report(const char *msg) {
  if (msg == NULL) msg = "(no message)";
  for (;;) {
    const char *colon = strstr(msg, ": ");
    if (colon == NULL) break;
    const char *pos = colon;
    while (pos > msg && pos[-1] >= '0' && pos[-1] <= '9') pos--;
    if (pos == colon || pos == msg || pos[-1] != ':') break;   /* not "where:N: " */
    size_t wl = (size_t)(pos - 1 - msg);
    int internal = (wl == 3 && strncmp(msg, "[C]", 3) == 0)
                   || (wl > 11 && memmem(msg, wl, "/sluice/", 8) != NULL
                       && strncmp(pos - 5, ".lua", 4) == 0);
    if (!internal) break;
    msg = colon + 2;
  }
  if (strncmp(msg, "sluice: ", 8) == 0) fprintf(stderr, "%s\n", msg);
  else if (strncmp(msg, "sluice ", 7) == 0) fprintf(stderr, "sluice: %s\n", msg + 7);
  else fprintf(stderr, "sluice: %s\n", msg);
}

static int usage_error(lua_State *L, cli *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  c->code = EXIT_USAGE;
  return lua_error(L);
}

/* Parses argv[first..] into opts and one positional FILE; "--" ends the
   options (what follows is positional, even if it starts with "-"). */
static void parse_opts(lua_State *L, cli *c, int first, cli_opt *opts,
                       const char *usage) {
  int options = 1;
  for (int i = first; i < c->argc; i++) {
    const char *a = c->argv[i];
    if (options && strcmp(a, "--") == 0) {
      options = 0;
      continue;
    }
    if (!options) {
      if (c->file != NULL)
        usage_error(L, c, "sluice %s: unexpected argument '%s'", c->command, a);
      c->file = a;
      continue;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage, stdout);
      c->code = EXIT_COMPLETED;
      lua_pushnil(L);
      lua_error(L);
    }
    if (a[0] == '-' && a[1] == '-') {
      const char *eq = strchr(a, '=');
      size_t n = eq ? (size_t)(eq - a) : strlen(a);
      cli_opt *o = NULL;
      for (cli_opt *p = opts; p->name; p++)
        if (strlen(p->name) == n && strncmp(p->name, a, n) == 0) o = p;
      if (o == NULL) {
        char given[128];
        snprintf(given, sizeof given, "%.*s", (int)(n < 127 ? n : 127), a);
        const char *names[32];
        size_t nn = 0;
        for (cli_opt *p = opts; p->name && nn < 32; p++) names[nn++] = p->name;
        const char *best = sl_suggest(given, names, nn);
        if (best)
          usage_error(L, c, "sluice %s: unknown option '%s' (did you mean '%s'?)",
                      c->command, given, best);
        usage_error(L, c, "sluice %s: unknown option '%s' (see sluice %s --help)",
                    c->command, given, c->command);
      }
      if (o->takes_value) {
        if (eq) o->value = eq + 1;
        else if (i + 1 < c->argc) o->value = c->argv[++i];
        else usage_error(L, c, "sluice %s: option '%s' needs a value", c->command, o->name);
        if (o->takes_value == 2) {
          if (c->nrepeated == CLI_MAX_REPEAT)
            usage_error(L, c, "sluice %s: option '%s' given more than %d times", c->command,
                        o->name, CLI_MAX_REPEAT);
          c->repeated[c->nrepeated++] = o->value;
        }
      } else {
        if (eq) usage_error(L, c, "sluice %s: option '%s' takes no value", c->command, o->name);
        o->value = "1";
      }
    } else if (c->file == NULL) {
      c->file = a;
    } else {
      usage_error(L, c, "sluice %s: unexpected argument '%s'", c->command, a);
    }
  }
  if (c->file == NULL)
    usage_error(L, c, "sluice %s: missing %s\n%s", c->command,
                strcmp(c->command, "resume") == 0 || strcmp(c->command, "show") == 0 ||
                strcmp(c->command, "fork") == 0 ||
                strcmp(c->command, "wait") == 0
                  ? "RUN_ID" : strcmp(c->command, "cache") == 0 ? "stats or clear"
                  : strcmp(c->command, "store") == 0 ? "check, vacuum or stats"
                  : "FILE", usage);
}

/* Reads a whole stream into a Lua string pushed on L. */
static void push_stream(lua_State *L, cli *c, FILE *f, const char *what) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char chunk[8192];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) luaL_addlstring(&b, chunk, n);
  if (ferror(f)) usage_error(L, c, "cannot read %s: %s", what, strerror(errno));
  luaL_pushresult(&b);
}

/* Pushes the decoded --input (nil when absent). */
static void push_input(lua_State *L, cli *c, const char *arg) {
  if (arg == NULL) {
    lua_pushnil(L);
    return;
  }
  const char *what = "--input";
  if (strcmp(arg, "-") == 0) {
    push_stream(L, c, stdin, "standard input");
    what = "--input - (standard input)";
  } else if (arg[0] == '@') {
    FILE *f = fopen(arg + 1, "rb");
    if (f == NULL) usage_error(L, c, "--input: cannot open '%s': %s", arg + 1, strerror(errno));
    push_stream(L, c, f, arg + 1);
    fclose(f);
    what = arg;
  } else {
    lua_pushstring(L, arg);
  }
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);
  if (sl_json_decode(L, text, len) != 0)
    usage_error(L, c, "%s: malformed JSON: %s", what, lua_tostring(L, -1));
  lua_remove(L, -2);
}

/* Loads the file; a script that does not load is exit code 2. */
static void load(lua_State *L, cli *c) {
  c->code = EXIT_USAGE;
  sl_engine_load_lua(L, c->e, c->file);
}

static void on_sigint(uv_signal_t *h, int signum) {
  cli *c = h->data;
  (void)signum;
  c->interrupted = 1;
  if (c->run != NULL && sl_run_status(c->run) == SL_RUN_RUNNING)
    sl_step_stop_run(c->run, "interrupted", "interrupted (SIGINT)");
  sl_engine_drain(c->e);
  if (strcmp(c->command, "dev") == 0) {
    /* Nothing else may keep the loop alive: the watch and this handler go. */
    sl_engine_unwatch(c->e);
    uv_close((uv_handle_t *)&c->sigint, NULL);
  }
}

/* Prints what a dev run did: its output or error, then each step and
   whether it ran or came from the cache. */
static int dev_report_p(lua_State *L) {
  cli *c = lua_touserdata(L, 1);
  sl_run *r = c->run;
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref_run);        /* run */
  sl_run_push_result(L, r, -1);                          /* run result */
  lua_getfield(L, -1, "steps");                          /* run result steps */
  int ran = 0, cached = 0;
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    lua_getfield(L, -1, "cached");
    int hit = lua_toboolean(L, -1);
    lua_getfield(L, -2, "name");
    lua_getfield(L, -3, "status");
    lua_getfield(L, -4, "ms");
    fprintf(stderr, "  %-9s %-24s %s %.2f ms\n", hit ? "cached" : "ran",
            lua_tostring(L, -3), lua_tostring(L, -2), lua_tonumber(L, -1));
    if (hit) cached++;
    else ran++;
    lua_pop(L, 5);
  }
  fprintf(stderr, "run %d (%s): %s, %d step(s) ran, %d from cache\n", c->runs,
          sl_run_id(r), sl_status_name(sl_run_status(r)), ran, cached);
  if (sl_run_status(r) == SL_RUN_COMPLETED) {
    lua_getfield(L, -2, "output");
    sl_buf b;
    char err[256];
    sl_buf_init(&b);
    if (sl_json_encode(L, -1, &b, 0, err, sizeof err) == 0)
      printf("%s\n", b.data);
    else
      fprintf(stderr, "sluice: the output cannot be encoded as JSON: %s\n", err);
    sl_buf_free(&b);
  } else {
    lua_getfield(L, -2, "error");
    report(luaL_tolstring(L, -1, NULL));
  }
  fflush(stdout);
  return 0;
}

static void dev_on_end(sl_run *r, void *ud) {
  cli *c = ud;
  (void)r;
  char err[1024];
  if (sl_protect(sl_engine_lua(c->e), dev_report_p, c, err, sizeof err) != LUA_OK)
    report(err);
}

static int dev_start_p(lua_State *L) {
  cli *c = lua_touserdata(L, 1);
  sl_engine_push_pipelines(L, c->e);
  sl_load_select(L, -1, c->pipeline, c->file, "--pipeline NAME");   /* set step */
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->ref_input);      /* set step input */
  c->runs++;
  c->run = sl_engine_start(L, c->e, -2, -1, 0, 0);         /* ... run */
  luaL_unref(L, LUA_REGISTRYINDEX, c->ref_run);
  c->ref_run = luaL_ref(L, LUA_REGISTRYINDEX);
  sl_run_on_end(c->run, dev_on_end, c);
  if (sl_run_status(c->run) != SL_RUN_RUNNING) dev_on_end(c->run, c);
  return 0;
}

/* Starts a dev run on the pipelines loaded now, cancelling one in flight. */
static void dev_start(cli *c) {
  if (c->run != NULL && sl_run_status(c->run) == SL_RUN_RUNNING) {
    sl_run_on_end(c->run, NULL, NULL);
    sl_step_stop_run(c->run, "cancelled", "the file changed");
  }
  char err[1024];
  if (sl_protect(sl_engine_lua(c->e), dev_start_p, c, err, sizeof err) != LUA_OK)
    report(err);
  sl_engine_drain(c->e);
}

static void dev_on_reload(sl_host *e, int status, const char *msg, void *ud) {
  cli *c = ud;
  (void)e;
  if (status != 0) {
    fprintf(stderr, "sluice: reload failed, keeping the previous version: %s\n", msg);
    return;
  }
  fprintf(stderr, "reloaded %s\n", c->file);
  dev_start(c);
}

static int cmd_dev(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--input", 1, NULL}, {"--pipeline", 1, NULL},
                    {"--debounce", 1, NULL}, {NULL, 0, NULL}};
  parse_opts(L, c, 2, opts, usage_dev);
  int debounce = 20;
  if (opts[2].value != NULL) {
    char *end;
    long ms = strtol(opts[2].value, &end, 10);
    if (*end != '\0' || ms < 0 || ms > 60000)
      usage_error(L, c, "sluice dev: --debounce must be a number of ms from 0 to 60000");
    debounce = (int)ms;
  }
  c->pipeline = opts[1].value;
  /* Every step is cached by its version: an edit re-runs only what
     changed and what depends on it. */
  sl_engine_set_cache_all(c->e, 1);
  push_input(L, c, opts[0].value);
  c->ref_input = luaL_ref(L, LUA_REGISTRYINDEX);
  c->ref_run = LUA_NOREF;
  /* A file that does not load yet is reported, and watched until it does. */
  int loaded = 1;
  lua_pushcfunction(L, load_only_p);
  lua_pushlightuserdata(L, c);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    report(lua_tostring(L, -1));
    lua_pop(L, 1);
    loaded = 0;
  }
  /* A file that never loaded is watched all the same. */
  sl_reload_expect(L, &c->e->host, c->file);
  uv_signal_init(sl_engine_loop(c->e), &c->sigint);
  c->sigint.data = c;
  uv_signal_start(&c->sigint, on_sigint, SIGINT);
  if (sl_reload_watch(&c->e->host, debounce, dev_on_reload, c) != 0)
    usage_error(L, c, "sluice dev: cannot watch %s", c->file);
  fprintf(stderr, "watching %s (Ctrl-C to stop)\n", c->file);
  if (loaded) dev_start(c);
  sl_engine_run_loop(c->e);
  luaL_unref(L, LUA_REGISTRYINDEX, c->ref_input);
  luaL_unref(L, LUA_REGISTRYINDEX, c->ref_run);
  c->code = c->interrupted ? EXIT_INTERRUPTED : EXIT_COMPLETED;
  return 0;
}

static int load_only_p(lua_State *L) {
  cli *c = lua_touserdata(L, 1);
  sl_engine_load_lua(L, c->e, c->file);
  return 0;
}

/* --budget: exact decimals, pushed as the run's budget table; returns its
   index, or 0 (nothing pushed) without one. */
static int push_budget(lua_State *L, cli *c, const char *value) {
  if (value == NULL) return 0;
  sl_usage limit;
  unsigned mask;
  char err[200];
  if (sl_budget_parse(value, &limit, &mask, err, sizeof err) != 0)
    usage_error(L, c, "sluice %s: --budget: %s", c->command, err);
  lua_newtable(L);
  for (int d = 0; d < SL_NDIMS; d++) {
    if (!(mask & (1u << d))) continue;
    if (d == SL_DIM_COST) {
      char dec[40];
      sl_cost_format(limit.cost_nanos, dec, sizeof dec);
      lua_pushnumber(L, strtod(dec, NULL));
    } else {
      lua_pushinteger(L, (lua_Integer)sl_usage_get(&limit, d));
    }
    lua_setfield(L, -2, sl_usage_dimname(d));
  }
  return lua_gettop(L);
}

/* The breakpoints of sluice run --break STEP[:before|:after|:both], as a
   table of step name -> when, pushed (0: none). Each must name a step of
   the pipeline at si (cli.lua), or nothing runs. */
static int push_breaks(lua_State *L, cli *c, int si) {
  if (c->nrepeated == 0) return 0;
  si = lua_absindex(L, si);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "sluice.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "breaks");
  lua_remove(L, -2);
  lua_pushvalue(L, si);
  lua_createtable(L, c->nrepeated, 0);
  for (int i = 0; i < c->nrepeated; i++) {
    lua_pushstring(L, c->repeated[i]);
    lua_rawseti(L, -2, i + 1);
  }
  c->code = EXIT_USAGE;
  lua_call(L, 2, 1);                                    /* ... breaks */
  return lua_gettop(L);
}

static int cmd_run(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--input", 1, NULL}, {"--pipeline", 1, NULL},
                    {"--json", 0, NULL}, {"--memory-limit", 1, NULL},
                    {"--budget", 1, NULL}, {"--store", 1, NULL}, {"--trace", 1, NULL},
                    {"--otlp", 1, NULL}, {"--break", 2, NULL}, {NULL, 0, NULL}};
  parse_opts(L, c, 2, opts, usage_run);
  if (opts[3].value != NULL) {
    /* A bare number is in MB here (SPEC); a unit may be given. */
    size_t bytes;
    char err[300];
    if (sl_memory_parse(opts[3].value, (size_t)1 << 20, &bytes, err, sizeof err) != 0)
      usage_error(L, c, "sluice run: --memory-limit: %s", err);
    sl_engine_set_memory_limit(L, c->e, bytes, "sluice run: --memory-limit");
  }
  load(L, c);                                           /* set */
  sl_load_select(L, -1, opts[1].value, c->file, "--pipeline NAME");   /* set step */
  push_input(L, c, opts[0].value);                      /* set step input */
  open_store(L, c, opts[5].value);
  open_trace(L, c, opts[6].value);
  open_exporter(L, c, opts[7].value);
  start_sigint(c);
  int bi = push_budget(L, c, opts[4].value);
  int bki = push_breaks(L, c, bi ? -3 : -2);
  int si = bi ? -3 : -2, ii = bi ? -2 : -1;
  if (bki) si--, ii--;
  c->code = EXIT_FAILED;
  c->run = sl_engine_start(L, c->e, si, ii, bi, bki);  /* ... run */
  return finish_run(L, c, opts[2].value != NULL);
}

/* Prints what a paused run waits for, and how to answer. */
static void print_waits(lua_State *L, cli *c, sl_run *r) {
  sl_record_push_waits(L, sl_engine_core(c->e), sl_run_id(r));   /* waits */
  fprintf(stderr, "sluice: run %s paused, waiting for input:\n", sl_run_id(r));
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  int open = 0, breaks = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (lua_getfield(L, -1, "answer") == LUA_TNIL) {
      lua_getfield(L, -2, "path");
      lua_getfield(L, -3, "message");
      const char *path = lua_tostring(L, -2);
      fprintf(stderr, "  at %s: %s\n", path, luaL_optstring(L, -1, ""));
      open++;
      breaks += strstr(path, "@before") != NULL || strstr(path, "@after") != NULL;
      lua_pop(L, 2);
    }
    lua_pop(L, 2);
  }
  if (breaks == open)
    fprintf(stderr, "resume with: sluice resume %s [--input JSON]\n", sl_run_id(r));
  else
    fprintf(stderr, "resume with: sluice resume %s --input JSON\n", sl_run_id(r));
  printf("%s\n", sl_run_id(r));
  lua_pop(L, 1);
}

/* The progress line: on a terminal, for a run that lasts more than about
   a second, what is done and running, the time, and the usage so far. */
static void on_progress(uv_timer_t *h) {
  cli *c = h->data;
  sl_run *r = c->run;
  if (r == NULL || sl_run_status(r) != SL_RUN_RUNNING) return;
  int done, running;
  double secs;
  sl_usage spent;
  sl_run_progress(r, &done, &running, &secs, &spent);
  char cost[40];
  sl_cost_format(spent.cost_nanos, cost, sizeof cost);
  fprintf(stderr, "\r\033[K%s: %d done, %d running, %.1fs", r->pipeline, done, running, secs);
  if (spent.cost_nanos || spent.tokens || spent.requests)
    fprintf(stderr, ", cost %s, %lld tokens, %lld requests", cost,
            (long long)spent.tokens, (long long)spent.requests);
  c->progress_shown = 1;
}

/* Waits for the run on top of L, prints its output (or with json its whole
   result) and sets the exit code from its status. */
static int finish_run(lua_State *L, cli *c, int json) {
  sl_engine_drain(c->e);
  int progress = isatty(2) && sl_run_status(c->run) == SL_RUN_RUNNING;
  if (progress) {
    uv_timer_init(sl_engine_loop(c->e), &c->progress);
    c->progress.data = c;
    sl_timer_start(&c->progress, on_progress, 1000, 250);
    uv_unref((uv_handle_t *)&c->progress);
  }
  sl_run_block(L, c->run);
  if (progress) {
    uv_close((uv_handle_t *)&c->progress, NULL);
    if (c->progress_shown) fputs("\r\033[K", stderr);
  }
  uv_signal_stop(&c->sigint);
  sl_run *r = c->run;
  if (json) {
    sl_result_json(L, r, -1, 0);                        /* ... run json */
    fwrite(lua_tostring(L, -1), 1, lua_rawlen(L, -1), stdout);
    fputc('\n', stdout);
    lua_pop(L, 1);
  } else if (sl_run_status(r) == SL_RUN_COMPLETED) {
    lua_getiuservalue(L, -1, SL_RUN_UV_OUTPUT);         /* ... run output */
    sl_buf b;
    char err[256];
    sl_buf_init(&b);
    if (sl_json_encode(L, -1, &b, 0, err, sizeof err) != 0) {
      sl_buf_free(&b);
      c->code = EXIT_FAILED;
      return luaL_error(L, "run %s completed, but its output cannot be "
                        "encoded as JSON: %s", sl_run_id(r), err);
    }
    fwrite(b.data, 1, b.len, stdout);
    fputc('\n', stdout);
    sl_buf_free(&b);
    lua_pop(L, 1);
  }
  int status = sl_run_status(r);
  if (status == SL_RUN_PAUSED) {
    if (!json) print_waits(L, c, r);
  } else if (status != SL_RUN_COMPLETED) {
    lua_getiuservalue(L, -1, SL_RUN_UV_ERROR);
    fprintf(stderr, "sluice: run %s %s: %s\n", sl_run_id(r),
            sl_status_name(status), luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
  }
  if (c->interrupted) c->code = EXIT_INTERRUPTED;
  else if (status == SL_RUN_COMPLETED) c->code = EXIT_COMPLETED;
  else if (status == SL_RUN_PAUSED) c->code = EXIT_PAUSED;
  else c->code = EXIT_FAILED;
  return 0;
}

/* Opens the store the command works on: --store, else SLUICE_STORE, else
   .sluice/state.db under the working directory (":memory:" for none). */
/* The store a command uses: --store, SLUICE_STORE, or .sluice/state.db. */
static const char *store_path(const char *flag) {
  const char *path = flag;
  if (path == NULL) path = getenv("SLUICE_STORE");
  if (path == NULL || *path == '\0') path = ".sluice/state.db";
  return path;
}

static void open_store(lua_State *L, cli *c, const char *flag) {
  c->code = EXIT_USAGE;
  sl_engine_set_store(L, c->e, store_path(flag), 0);
}

/* For the commands that only read: the store is never created; returns 0
   when there is none (nothing has run yet), and raises on any other
   failure. */
static int open_store_to_read(lua_State *L, cli *c, const char *flag) {
  const char *path = store_path(flag);
  c->code = EXIT_USAGE;
  if (!sl_store_is_server(path) && access(path, F_OK) != 0 && errno == ENOENT) return 0;
  int rc = sl_engine_open_store(c->e, path, 1);
  if (rc == SL_ENOTFOUND) return 0;   /* made, but nothing written to it yet */
  if (rc != 0) luaL_error(L, "%s", sl_engine_core(c->e)->errmsg);
  return 1;
}

/* --trace FILE: one OpenTelemetry span per step execution, as JSON lines. */
static void open_trace(lua_State *L, cli *c, const char *path) {
  if (path == NULL) return;
  char err[300];
  if (sl_engine_set_trace(c->e, path, err, sizeof err) != 0)
    usage_error(L, c, "--trace: %s", err);
}

/* --otlp URL, else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the whole URL) or
   OTEL_EXPORTER_OTLP_ENDPOINT (the collector's base): spans exported over
   OTLP/HTTP as the run goes; what the collector did not take is counted
   and said at the end, and the run's outcome is its own. */
static void open_exporter(lua_State *L, cli *c, const char *url) {
  if (url == NULL) url = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
  if (url == NULL || *url == '\0') url = getenv("OTEL_EXPORTER_OTLP_ENDPOINT");
  if (url == NULL || *url == '\0') return;
  char err[1200];
  if (sl_engine_set_otlp(c->e, url, err, sizeof err) != 0)
    usage_error(L, c, "sluice %s: --otlp: %s", c->command, err);
}

static void start_sigint(cli *c) {
  uv_signal_init(sl_engine_loop(c->e), &c->sigint);
  c->sigint.data = c;
  uv_signal_start(&c->sigint, on_sigint, SIGINT);
  uv_unref((uv_handle_t *)&c->sigint);
}

static int cmd_resume(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--input", 1, NULL}, {"--force", 0, NULL},
                    {"--json", 0, NULL}, {"--store", 1, NULL}, {"--trace", 1, NULL},
                    {"--otlp", 1, NULL}, {NULL, 0, NULL}};
  parse_opts(L, c, 2, opts, usage_resume);
  open_store(L, c, opts[3].value);
  open_trace(L, c, opts[4].value);
  open_exporter(L, c, opts[5].value);
  if (opts[0].value != NULL) push_input(L, c, opts[0].value);
  else lua_pushnil(L);
  int ii = lua_gettop(L);
  start_sigint(c);
  c->code = EXIT_USAGE;
  c->run = sl_resume(L, &c->e->host, c->file, ii, opts[1].value != NULL);
  if (c->run == NULL) {
    /* Submitted to a queue: the answer is recorded and a worker goes on. */
    fprintf(stderr, "sluice: run %s answered; it is queued again for a worker "
                    "(sluice wait %s)\n", c->file, c->file);
    printf("%s\n", c->file);
    c->code = EXIT_COMPLETED;
    return 0;
  }
  c->code = EXIT_FAILED;
  return finish_run(L, c, opts[2].value != NULL);
}

/* sluice fork RUN_ID --from PATH: a new run from one step of a stored one. */
static int cmd_fork(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--from", 1, NULL}, {"--input", 1, NULL}, {"--state", 1, NULL},
                    {"--force", 0, NULL}, {"--json", 0, NULL}, {"--store", 1, NULL},
                    {NULL, 0, NULL}};
  parse_opts(L, c, 2, opts, usage_fork);
  if (c->file == NULL) usage_error(L, c, "sluice fork: which run? (sluice fork RUN_ID --from PATH)");
  if (opts[0].value == NULL)
    usage_error(L, c, "sluice fork: --from STEP_PATH is needed (the paths sluice show --json %s "
                      "gives)", c->file);
  open_store(L, c, opts[5].value);
  if (opts[1].value != NULL) push_input(L, c, opts[1].value);
  else lua_pushnil(L);
  int ii = lua_gettop(L);
  if (opts[2].value != NULL) {
    push_input(L, c, opts[2].value);
    if (!lua_istable(L, -1) || lua_rawlen(L, -1) > 0)
      usage_error(L, c, "sluice fork: --state must be a JSON object of state fields, got %s",
                  lua_istable(L, -1) ? "an array" : luaL_typename(L, -1));
  } else {
    lua_pushnil(L);
  }
  int sti = lua_gettop(L);
  start_sigint(c);
  c->code = EXIT_USAGE;
  c->run = sl_fork(L, &c->e->host, c->file, opts[0].value, ii, sti, opts[3].value != NULL);
  fprintf(stderr, "sluice: run %s forked from %s at %s\n", sl_run_id(c->run), c->file,
          opts[0].value);
  c->code = EXIT_FAILED;
  return finish_run(L, c, opts[4].value != NULL);
}

/* Calls the Lua side of the listing commands (lua/sluice/cli.lua). */
static int call_cli_lua(lua_State *L, cli *c, const char *fn, int nargs) {
  int base = lua_gettop(L) - nargs;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "sluice.cli");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  lua_insert(L, base + 1);
  sl_engine_push_box(L, c->e);
  lua_insert(L, base + 2);
  lua_call(L, nargs + 1, 2);                            /* text code */
  fputs(lua_tostring(L, -2), stdout);
  c->code = (int)lua_tointeger(L, -1);
  return 0;
}

/* Pushes the first n options given as a table for cli.lua, keyed by name
   without the dashes, with nostore: whether there is a store to read. */
static void push_opts(lua_State *L, const cli_opt *opts, int n, int nostore) {
  lua_createtable(L, 0, n + 1);
  for (int i = 0; i < n; i++) {
    if (opts[i].value == NULL) continue;
    lua_pushstring(L, opts[i].value);
    lua_setfield(L, -2, opts[i].name + 2);
  }
  lua_pushboolean(L, nostore);
  lua_setfield(L, -2, "nostore");
}

/* sluice runs prune [--older-than AGE] [--status S] [--keep N] [--pipeline P]. */
static int cmd_prune(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--older-than", 1, NULL}, {"--status", 1, NULL}, {"--keep", 1, NULL},
                    {"--pipeline", 1, NULL}, {"--json", 0, NULL}, {"--store", 1, NULL},
                    {NULL, 0, NULL}};
  c->file = "";
  parse_opts(L, c, 3, opts, usage_prune);
  if (c->file[0] != '\0')
    usage_error(L, c, "sluice runs prune: unexpected argument '%s'", c->file);
  int nostore = !open_store_to_read(L, c, opts[5].value);
  if (!nostore) open_store(L, c, opts[5].value);
  push_opts(L, opts, 5, nostore);
  c->code = EXIT_USAGE;
  return call_cli_lua(L, c, "prune", 1);
}

static const char *queue_opt(lua_State *L, cli *c, const char *q);

static int cmd_runs(lua_State *L, cli *c) {
  if (c->argc > 2 && strcmp(c->argv[2], "prune") == 0) return cmd_prune(L, c);
  cli_opt opts[] = {{"--json", 0, NULL}, {"--status", 1, NULL},
                    {"--pipeline", 1, NULL}, {"--limit", 1, NULL},
                    {"--before", 1, NULL}, {"--queue", 1, NULL}, {"--store", 1, NULL},
                    {NULL, 0, NULL}};
  c->file = "";  /* no FILE for this command */
  parse_opts(L, c, 2, opts, usage_runs);
  if (c->file[0] != '\0')
    usage_error(L, c, "sluice runs: unexpected argument '%s' (did you mean sluice runs prune?)",
                c->file);
  if (opts[5].value != NULL) queue_opt(L, c, opts[5].value);
  int nostore = !open_store_to_read(L, c, opts[6].value);
  push_opts(L, opts, 6, nostore);
  c->code = EXIT_USAGE;
  return call_cli_lua(L, c, "runs", 1);
}

static int cmd_show(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--json", 0, NULL}, {"--store", 1, NULL}, {"--timeline", 0, NULL},
                    {NULL, 0, NULL}};
  parse_opts(L, c, 2, opts, usage_show);
  if (opts[0].value != NULL && opts[2].value != NULL)
    usage_error(L, c, "sluice show: --json and --timeline are two forms; give one");
  if (!open_store_to_read(L, c, opts[1].value))
    usage_error(L, c, "sluice show: no run with id '%s': there is no store at %s",
                c->file, store_path(opts[1].value));
  lua_pushstring(L, c->file);
  lua_pushboolean(L, opts[0].value != NULL);
  lua_pushboolean(L, opts[2].value != NULL);
  c->code = EXIT_USAGE;
  return call_cli_lua(L, c, "show", 3);
}

static long long count_opt(lua_State *L, cli *c, const char *name, const char *v,
                           long long dflt, long long lo);

/* sluice ui: the runs as a web page (ui.c). */
static int cmd_ui(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--store", 1, NULL}, {"--host", 1, NULL}, {"--port", 1, NULL},
                    {NULL, 0, NULL}};
  c->file = "";
  parse_opts(L, c, 2, opts, usage_ui);
  if (c->file[0] != '\0') usage_error(L, c, "sluice ui: unexpected argument '%s'", c->file);
  const char *host = opts[1].value ? opts[1].value : "127.0.0.1";
  int port = (int)count_opt(L, c, "--port", opts[2].value, 0, 0);
  if (port > 65535) usage_error(L, c, "sluice ui: --port must be from 0 to 65535, got %d", port);
  if (strcmp(host, "127.0.0.1") != 0 && strcmp(host, "localhost") != 0 &&
      strcmp(host, "::1") != 0 && strncmp(host, "127.", 4) != 0)
    fprintf(stderr, "sluice ui: warning: listening on %s: anyone who can reach it on that "
                    "network can read every run in the store and answer paused ones\n", host);
  open_store(L, c, opts[0].value);
  char err[300];
  if (sl_ui_run(L, c->e, store_path(opts[0].value), host, port, err, sizeof err) != 0)
    usage_error(L, c, "sluice ui: %s", err);
  c->code = EXIT_COMPLETED;
  return 0;
}

/* sluice store check | vacuum | stats [--json]. */
static int cmd_store(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--json", 0, NULL}, {"--store", 1, NULL}, {NULL, 0, NULL}};
  parse_opts(L, c, 2, opts, usage_store);
  const char *verb = c->file;
  if (strcmp(verb, "check") != 0 && strcmp(verb, "vacuum") != 0 && strcmp(verb, "stats") != 0)
    usage_error(L, c, "sluice store: unknown action '%s' (check, vacuum or stats)", verb);
  if (!open_store_to_read(L, c, opts[1].value))
    usage_error(L, c, "sluice store %s: there is no store at %s", verb,
                store_path(opts[1].value));
  if (strcmp(verb, "vacuum") == 0) open_store(L, c, opts[1].value);
  lua_pushstring(L, verb);
  lua_pushboolean(L, opts[0].value != NULL);
  c->code = EXIT_USAGE;
  return call_cli_lua(L, c, "store", 2);
}

/* sluice cache stats | clear [--step NAME]: the persistent tier. */
static int cmd_cache(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--step", 1, NULL}, {"--json", 0, NULL}, {"--store", 1, NULL},
                    {NULL, 0, NULL}};
  parse_opts(L, c, 2, opts, usage_cache);
  const char *verb = c->file;
  if (strcmp(verb, "stats") != 0 && strcmp(verb, "clear") != 0)
    usage_error(L, c, "sluice cache: unknown action '%s' (stats or clear)", verb);
  if (strcmp(verb, "clear") == 0) open_store(L, c, opts[2].value);
  else if (!open_store_to_read(L, c, opts[2].value)) {
    fputs(opts[1].value ? "{\"entries\":0,\"bytes\":0,\"hits\":0,\"steps\":[]}\n"
                        : "0 cached outputs (there is no store)\n", stdout);
    c->code = EXIT_COMPLETED;
    return 0;
  }
  lua_pushstring(L, verb);
  lua_createtable(L, 0, 2);
  if (opts[0].value) {
    lua_pushstring(L, opts[0].value);
    lua_setfield(L, -2, "step");
  }
  lua_pushboolean(L, opts[1].value != NULL);
  lua_setfield(L, -2, "json");
  c->code = EXIT_USAGE;
  return call_cli_lua(L, c, "cache", 2);
}

static int cmd_graph(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--format", 1, NULL}, {"--pipeline", 1, NULL}, {"--tree", 0, NULL},
                    {NULL, 0, NULL}};
  parse_opts(L, c, 2, opts, usage_graph);
  const char *format = opts[0].value ? opts[0].value : "mermaid";
  if (strcmp(format, "mermaid") != 0 && strcmp(format, "dot") != 0)
    usage_error(L, c, "sluice graph: --format must be mermaid or dot, got '%s'", format);
  load(L, c);                                           /* set */
  if (opts[1].value) sl_load_select(L, -1, opts[1].value, c->file, "--pipeline NAME");
  lua_getglobal(L, "require");
  lua_pushliteral(L, "sluice.graph");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "render");
  lua_pushvalue(L, -3);
  lua_pushstring(L, format);
  lua_pushstring(L, opts[2].value ? "tree" : "flow");
  lua_call(L, 3, 1);
  fputs(lua_tostring(L, -1), stdout);
  c->code = EXIT_COMPLETED;
  return 0;
}

static int cmd_check(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--pipeline", 1, NULL}, {NULL, 0, NULL}};
  parse_opts(L, c, 2, opts, usage_check);
  load(L, c);                                           /* set */
  if (opts[0].value) {
    /* Only the pipeline named is reported: the others were checked too,
       as every load checks the whole file. */
    sl_load_select(L, -1, opts[0].value, c->file, "--pipeline NAME");   /* set step */
    printf("ok: %s (%s)\n", c->file, opts[0].value);
    c->code = EXIT_COMPLETED;
    return 0;
  }
  printf("ok: %s", c->file);
  const char *sep = " (";
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    printf("%s%s", sep, lua_tostring(L, -1));
    sep = ", ";
  }
  printf("%s\n", strcmp(sep, ", ") == 0 ? ")" : "");
  c->code = EXIT_COMPLETED;
  return 0;
}

/* A queue name: letters, digits, '-', '_', '.', at most 64. */
static const char *queue_opt(lua_State *L, cli *c, const char *q) {
  if (q == NULL) return "default";
  size_t n = strlen(q);
  int ok = n > 0 && n <= 64;
  for (size_t i = 0; ok && i < n; i++)
    ok = (q[i] >= 'a' && q[i] <= 'z') || (q[i] >= 'A' && q[i] <= 'Z') ||
         (q[i] >= '0' && q[i] <= '9') || q[i] == '-' || q[i] == '_' || q[i] == '.';
  if (!ok)
    usage_error(L, c, "sluice %s: --queue must be 1 to 64 letters, digits, '-', '_' "
                      "or '.', got '%s'", c->command, q);
  return q;
}

/* A whole number of at least lo from an option, or a usage error. */
static long long count_opt(lua_State *L, cli *c, const char *name, const char *v,
                           long long dflt, long long lo) {
  if (v == NULL) return dflt;
  char *end;
  errno = 0;
  long long n = strtoll(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0' || n < lo || n > 1000000000)
    usage_error(L, c, "sluice %s: %s must be a whole number of at least %d, got '%s'",
                c->command, name, (int)lo, v);
  return n;
}

/* Seconds (a decimal) from an option, as milliseconds. */
static int64_t seconds_opt(lua_State *L, cli *c, const char *name, const char *v,
                           int64_t dflt_ms) {
  if (v == NULL) return dflt_ms;
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  if (errno != 0 || end == v || *end != '\0' || !(d >= 0) || d > 1e9)
    usage_error(L, c, "sluice %s: %s must be a number of seconds, got '%s'", c->command,
                name, v);
  return (int64_t)(d * 1000.0 + 0.5);
}

/* sluice submit FILE: records a queued run for a worker and prints its id. */
static int cmd_submit(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--input", 1, NULL}, {"--pipeline", 1, NULL},
                    {"--budget", 1, NULL}, {"--queue", 1, NULL},
                    {"--store", 1, NULL}, {NULL, 0, NULL}};
  parse_opts(L, c, 2, opts, usage_submit);
  const char *queue = queue_opt(L, c, opts[3].value);
  load(L, c);                                           /* set */
  sl_load_select(L, -1, opts[1].value, c->file, "--pipeline NAME");   /* set step */
  push_input(L, c, opts[0].value);                      /* set step input */
  int bi = push_budget(L, c, opts[2].value);
  open_store(L, c, opts[4].value);
  char id[32];
  sl_run_new_id(&c->e->host, id);
  sl_record_submit(L, &c->e->host, bi ? -3 : -2, bi ? -2 : -1, bi, queue, id);
  printf("%s\n", id);
  c->code = EXIT_COMPLETED;
  return 0;
}

static sl_worker *the_worker;

static void on_stop_signal(uv_signal_t *h, int signum) {
  cli *c = h->data;
  if (the_worker == NULL) return;
  if (!c->interrupted)
    fprintf(stderr, "sluice: worker stopping (%s): no more claims; running runs "
                    "finish or are handed back\n", signum == SIGTERM ? "SIGTERM" : "SIGINT");
  c->interrupted = 1;
  sl_worker_stop(the_worker);
}

/* sluice worker: executes queued runs until stopped. */
static int cmd_worker(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--concurrency", 1, NULL}, {"--queue", 1, NULL},
                    {"--store", 1, NULL}, {"--grace", 1, NULL},
                    {"--poll", 1, NULL}, {"--until-idle", 0, NULL},
                    {"--park-after", 1, NULL}, {NULL, 0, NULL}};
  c->file = "";
  parse_opts(L, c, 2, opts, usage_worker);
  if (c->file[0] != '\0')
    usage_error(L, c, "sluice worker: unexpected argument '%s'", c->file);
  sl_worker_options o;
  memset(&o, 0, sizeof o);
  o.queue = queue_opt(L, c, opts[1].value);
  o.concurrency = (int)count_opt(L, c, "--concurrency", opts[0].value, 1, 1);
  o.grace_ms = seconds_opt(L, c, "--grace", opts[3].value, 30000);
  o.poll_ms = seconds_opt(L, c, "--poll", opts[4].value, 200);
  if (o.poll_ms < 1) o.poll_ms = 1;
  o.until_idle = opts[5].value != NULL;
  o.park_after_ms = seconds_opt(L, c, "--park-after", opts[6].value, 5000);
  if (o.park_after_ms < 1) o.park_after_ms = 1;
  const char *path = store_path(opts[2].value);
  if (strcmp(path, ":memory:") == 0)
    usage_error(L, c, "sluice worker: a worker needs a store that submit can reach, "
                      "not :memory:");
  open_store(L, c, opts[2].value);
  sl_host *h = &c->e->host;
  the_worker = sl_worker_start(h, &o);
  if (the_worker == NULL) luaL_error(L, "not enough memory for the worker");
  uv_signal_t sigterm;
  uv_signal_init(sl_engine_loop(c->e), &c->sigint);
  uv_signal_init(sl_engine_loop(c->e), &sigterm);
  c->sigint.data = sigterm.data = c;
  uv_signal_start(&c->sigint, on_stop_signal, SIGINT);
  uv_signal_start(&sigterm, on_stop_signal, SIGTERM);
  uv_unref((uv_handle_t *)&c->sigint);
  uv_unref((uv_handle_t *)&sigterm);
  fprintf(stderr, "sluice: worker %s on queue '%s' of %s (concurrency %d)\n",
          sl_engine_core(c->e)->owner, o.queue, path, o.concurrency);
  c->code = EXIT_FAILED;
  while (!sl_worker_done(the_worker)) {
    h->in_uv_run = 1;
    uv_run(sl_engine_loop(c->e), UV_RUN_ONCE);
    h->in_uv_run = 0;
    sl_engine_drain(c->e);
  }
  sl_worker_stats st;
  sl_worker_get_stats(the_worker, &st);
  sl_worker_free(the_worker);
  the_worker = NULL;
  uv_close((uv_handle_t *)&sigterm, NULL);
  uv_close((uv_handle_t *)&c->sigint, NULL);
  sl_engine_run_loop(c->e);   /* the handles close */
  fprintf(stderr, "sluice: worker done: %lld runs claimed, %lld ended here, %lld handed "
                  "back, %lld passed over\n", (long long)st.claimed, (long long)st.ended,
          (long long)st.handed_back, (long long)st.passed_over);
  c->code = EXIT_COMPLETED;
  return 0;
}

/* sluice wait RUN_ID: waits for a run to end and prints as sluice run. */
static int cmd_wait(lua_State *L, cli *c) {
  cli_opt opts[] = {{"--json", 0, NULL}, {"--timeout", 1, NULL},
                    {"--store", 1, NULL}, {NULL, 0, NULL}};
  parse_opts(L, c, 2, opts, usage_wait);
  int64_t timeout = seconds_opt(L, c, "--timeout", opts[1].value, -1);
  if (!open_store_to_read(L, c, opts[2].value))
    usage_error(L, c, "no run with id '%s' in %s (nothing has been recorded there)", c->file,
                store_path(opts[2].value));
  sl_store *s = sl_engine_core(c->e)->store;
  uint64_t start = uv_hrtime();
  int64_t nap = 2;
  for (;;) {
    sl_store_run *row;
    int rc = sl_store_run_get(s, c->file, &row);
    if (rc == SL_STORE_ENOTFOUND)
      usage_error(L, c, "no run with id '%s' in %s", c->file, sl_store_path(s));
    if (rc != 0) luaL_error(L, "%s", sl_store_errmsg(s));
    const char *st = row->status;
    int ended = strcmp(st, "completed") == 0 || strcmp(st, "failed") == 0 ||
                strcmp(st, "cancelled") == 0 || strcmp(st, "paused") == 0;
    /* A run nobody will take on (not submitted, its owner gone) has stopped. */
    int stopped = !ended && row->queue == NULL &&
                  !sl_owner_alive(row->owner, row->lease_ms, sl_owner_now_ms());
    sl_store_run_free(row);
    if (ended || stopped) {
      lua_pushstring(L, c->file);
      lua_pushboolean(L, opts[0].value != NULL);
      return call_cli_lua(L, c, "wait_report", 2);
    }
    if (timeout >= 0 && (int64_t)((uv_hrtime() - start) / 1000000) >= timeout) {
      fprintf(stderr, "sluice: run %s has not ended after %.3gs\n", c->file,
              (double)timeout / 1000.0);
      c->code = EXIT_INTERRUPTED;
      return 0;
    }
    /* From 2 ms to 100 ms between looks: a short run is seen at once, a
       long one costs the store little. */
    usleep((useconds_t)(nap * 1000));
    if (nap < 100) nap = nap * 2 > 100 ? 100 : nap * 2;
  }
}

static int cli_main(lua_State *L) {
  cli *c = lua_touserdata(L, 1);
  c->code = EXIT_USAGE;
  if (c->argc < 2) {
    fputs(usage_main, stderr);
    return 0;
  }
  c->command = c->argv[1];
  if (strcmp(c->command, "run") == 0) return cmd_run(L, c);
  if (strcmp(c->command, "check") == 0) return cmd_check(L, c);
  if (strcmp(c->command, "dev") == 0) return cmd_dev(L, c);
  if (strcmp(c->command, "graph") == 0) return cmd_graph(L, c);
  if (strcmp(c->command, "cache") == 0) return cmd_cache(L, c);
  if (strcmp(c->command, "resume") == 0) return cmd_resume(L, c);
  if (strcmp(c->command, "fork") == 0) return cmd_fork(L, c);
  if (strcmp(c->command, "runs") == 0) return cmd_runs(L, c);
  if (strcmp(c->command, "store") == 0) return cmd_store(L, c);
  if (strcmp(c->command, "show") == 0) return cmd_show(L, c);
  if (strcmp(c->command, "submit") == 0) return cmd_submit(L, c);
  if (strcmp(c->command, "worker") == 0) return cmd_worker(L, c);
  if (strcmp(c->command, "wait") == 0) return cmd_wait(L, c);
  if (strcmp(c->command, "ui") == 0) return cmd_ui(L, c);
  if (strcmp(c->command, "version") == 0 || strcmp(c->command, "--version") == 0) {
    printf("sluice %s (%s, libuv %s)\n", SLUICE_VERSION, LUA_RELEASE, uv_version_string());
    c->code = EXIT_COMPLETED;
    return 0;
  }
  if (strcmp(c->command, "help") == 0 || strcmp(c->command, "--help") == 0 ||
      strcmp(c->command, "-h") == 0) {
    const char *topic = c->argc > 2 ? c->argv[2] : "";
    fputs(strcmp(topic, "run") == 0 ? usage_run
          : strcmp(topic, "dev") == 0 ? usage_dev
          : strcmp(topic, "graph") == 0 ? usage_graph
          : strcmp(topic, "cache") == 0 ? usage_cache
          : strcmp(topic, "resume") == 0 ? usage_resume
          : strcmp(topic, "fork") == 0 ? usage_fork
          : strcmp(topic, "runs") == 0 ? usage_runs
          : strcmp(topic, "prune") == 0 ? usage_prune
          : strcmp(topic, "store") == 0 ? usage_store
          : strcmp(topic, "show") == 0 ? usage_show
          : strcmp(topic, "submit") == 0 ? usage_submit
          : strcmp(topic, "worker") == 0 ? usage_worker
          : strcmp(topic, "wait") == 0 ? usage_wait
          : strcmp(topic, "ui") == 0 ? usage_ui
          : strcmp(topic, "check") == 0 ? usage_check : usage_main, stdout);
    c->code = EXIT_COMPLETED;
    return 0;
  }
  static const char *commands[] = {"run", "dev", "resume", "fork", "runs", "store", "show", "check",
                                   "graph", "cache", "submit", "worker", "wait", "ui", "help",
                                   "version", NULL};
  const char *best = sl_suggest(c->command, commands,
                                sizeof commands / sizeof *commands - 1);
  if (best) return usage_error(L, c, "sluice: unknown command '%s' (did you mean '%s'?)", c->command, best);
  return usage_error(L, c, "sluice: unknown command '%s'\n%s", c->command, usage_main);
}

int main(int argc, char **argv) {
  cli c;
  memset(&c, 0, sizeof c);
  c.argc = argc;
  c.argv = argv;
  if (sl_engine_new(&c.e, NULL) != SL_OK) return EXIT_USAGE;
  lua_State *L = sl_engine_lua(c.e);
  lua_pushcfunction(L, cli_main);
  lua_pushlightuserdata(L, &c);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    if (!lua_isnil(L, -1))
      report(luaL_tolstring(L, -1, NULL));
    if (c.code == EXIT_COMPLETED && !lua_isnil(L, -1)) c.code = EXIT_USAGE;
  }
  char lost[1600];
  if (sl_engine_otlp_finish(c.e, 5000, lost, sizeof lost) > 0) report(lost);
  if (c.sigint.loop != NULL && !uv_is_closing((uv_handle_t *)&c.sigint))
    uv_close((uv_handle_t *)&c.sigint, NULL);
  fflush(stdout);
  sl_engine_free(c.e);
  return c.code;
}
