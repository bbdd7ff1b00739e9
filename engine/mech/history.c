/*
** Step history records and their arena.
*/
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "history.h"
#include "value.h"

#define CHUNK_SIZE 4096

struct sl_hist_chunk {
  sl_hist_chunk *next;
  size_t used, size;
  char data[];
};

void sl_hist_init(sl_history *h) {
  memset(h, 0, sizeof *h);
}

void sl_hist_free(sl_history *h) {
  sl_hist_chunk *c = h->arena;
  while (c) {
    sl_hist_chunk *next = c->next;
    free(c);
    c = next;
  }
  for (int i = 0; i < h->n; i++) sl_hist_label_drop(h->recs[i].label);
  free(h->recs);
  sl_hist_init(h);
}

/* Copies len bytes of s into the arena, NUL-terminated. */
static const char *arena_copy(sl_history *h, const char *s, size_t len) {
  sl_hist_chunk *c = h->arena;
  if (c == NULL || c->size - c->used < len + 1) {
    size_t size = len + 1 > CHUNK_SIZE ? len + 1 : CHUNK_SIZE;
    c = malloc(sizeof *c + size);
    if (c == NULL) return NULL;
    c->size = size;
    c->used = 0;
    c->next = h->arena;
    h->arena = c;
  }
  char *p = c->data + c->used;
  memcpy(p, s, len);
  p[len] = '\0';
  c->used += len + 1;
  return p;
}

sl_hist_label *sl_hist_label_new(const char *name, size_t nlen, const char *kind,
                                 size_t klen) {
  sl_hist_label *l = malloc(sizeof *l + nlen + klen + 2);
  if (l == NULL) return NULL;
  l->refs = 1;
  l->nlen = nlen;
  l->klen = klen;
  memcpy(l->text, name, nlen);
  l->text[nlen] = '\0';
  memcpy(l->text + nlen + 1, kind, klen);
  l->text[nlen + 1 + klen] = '\0';
  l->name = l->text;
  l->kind = l->text + nlen + 1;
  return l;
}

void sl_hist_label_drop(sl_hist_label *l) {
  if (l != NULL && --l->refs == 0) free(l);
}

static const char *copy_or_null(sl_history *h, const char *s) {
  return s ? arena_copy(h, s, strlen(s)) : NULL;
}

void sl_hist_reserve(sl_history *h, int n) {
  if (n <= h->cap) return;
  sl_hist_rec *recs = realloc(h->recs, (size_t)n * sizeof *recs);
  if (recs == NULL) return;
  h->recs = recs;
  h->cap = n;
}

int sl_hist_begin(sl_history *h, int parent, sl_hist_label *label, uint64_t t0) {
  if (h->n == h->cap) {
    int cap = h->cap ? h->cap * 2 : 64;
    sl_hist_rec *recs = realloc(h->recs, (size_t)cap * sizeof *recs);
    if (recs == NULL) return -1;
    h->recs = recs;
    h->cap = cap;
  }
  sl_hist_rec *r = &h->recs[h->n];
  label->refs++;
  r->label = label;
  r->name = label->name;
  r->kind = label->kind;
  r->err_kind = r->err_msg = r->err_where = r->err_step = NULL;
  r->t0 = t0;
  r->t1 = 0;
  r->key = NULL;
  r->fallback = NULL;
  r->path = NULL;
  r->restored = 0;
  r->ordinal = 0;
  r->parent = parent;
  r->attempts = 1;
  r->status = SL_STEP_RUNNING;
  r->cached = 0;
  r->has_usage = 0;
  r->logs = r->logs_tail = NULL;
  r->nlogs = r->logs_dropped = 0;
  memset(&r->usage, 0, sizeof r->usage);
  return h->n++;
}

void sl_hist_set_key(sl_history *h, int i, const char *key, size_t klen, int ordinal) {
  if (i < 0) return;
  h->recs[i].ordinal = ordinal;
  if (key != NULL) h->recs[i].key = arena_copy(h, key, klen);
}

void sl_hist_set_attempts(sl_history *h, int i, int n) {
  if (i >= 0) h->recs[i].attempts = n;
}

void sl_hist_set_usage(sl_history *h, int i, const sl_usage *u) {
  if (i < 0) return;
  h->recs[i].usage = *u;
  h->recs[i].has_usage = 1;
}

void sl_hist_set_path(sl_history *h, int i, const char *path) {
  if (i >= 0) h->recs[i].path = copy_or_null(h, path);
}

void sl_hist_set_restored(sl_history *h, int i) {
  if (i >= 0) h->recs[i].restored = 1;
}

void sl_hist_set_cached(sl_history *h, int i) {
  if (i >= 0) h->recs[i].cached = 1;
}

/* Room for n bytes in the arena, aligned for a struct. */
static void *arena_alloc(sl_history *h, size_t n) {
  sl_hist_chunk *c = h->arena;
  size_t pad = c ? (-(uintptr_t)(c->data + c->used)) & (sizeof(void *) - 1) : 0;
  if (c == NULL || c->size - c->used < n + pad) {
    size_t size = n > CHUNK_SIZE ? n : CHUNK_SIZE;
    c = malloc(sizeof *c + size);
    if (c == NULL) return NULL;
    c->size = size;
    c->used = 0;
    c->next = h->arena;
    h->arena = c;
    pad = 0;
  }
  void *p = c->data + c->used + pad;
  c->used += pad + n;
  return p;
}

int sl_hist_add_log(sl_history *h, int i, int64_t time_ns, const char *level,
                    const char *msg, size_t mlen, const char *fields) {
  if (i < 0) return -1;
  sl_hist_rec *r = &h->recs[i];
  if (r->nlogs >= SL_HIST_MAX_LOGS) {
    r->logs_dropped++;
    return -1;
  }
  sl_trace_event *e = arena_alloc(h, sizeof *e);
  const char *m = e ? arena_copy(h, msg, mlen) : NULL;
  const char *f = m && fields ? arena_copy(h, fields, strlen(fields)) : NULL;
  if (m == NULL || (fields && f == NULL)) {
    r->logs_dropped++;
    return -1;
  }
  e->next = NULL;
  e->time_ns = time_ns;
  e->level = level;
  e->message = m;
  e->mlen = mlen;
  e->fields = f;
  if (r->logs_tail) r->logs_tail->next = e;
  else r->logs = e;
  r->logs_tail = e;
  r->nlogs++;
  return 0;
}

#define ADD_LIT(b, lit) sl_buf_add((b), (lit), sizeof(lit) - 1)

int sl_hist_logs_json(const sl_hist_rec *r, sl_buf *b) {
  if (r->logs == NULL && r->logs_dropped == 0) return 0;
  int rc = ADD_LIT(b, "[");
  char num[32];
  for (const sl_trace_event *e = r->logs; e; e = e->next) {
    snprintf(num, sizeof num, "%lld", (long long)(e->time_ns / 1000000));
    if (e != r->logs) rc |= ADD_LIT(b, ",");
    rc |= ADD_LIT(b, "{\"time_ms\":");
    rc |= sl_buf_add(b, num, strlen(num)) | ADD_LIT(b, ",\"level\":")
        | sl_json_add_string(b, e->level, strlen(e->level)) | ADD_LIT(b, ",\"message\":")
        | sl_json_add_string(b, e->message, e->mlen);
    if (e->fields) {
      /* Fields the encoder wrote are JSON; others were kept as their text. */
      rc |= ADD_LIT(b, ",\"fields\":") | sl_buf_add(b, e->fields, strlen(e->fields));
    }
    rc |= ADD_LIT(b, "}");
  }
  if (r->logs_dropped > 0) {
    snprintf(num, sizeof num, "%d", r->logs_dropped);
    if (r->logs) rc |= ADD_LIT(b, ",");
    rc |= ADD_LIT(b, "{\"dropped\":") | sl_buf_add(b, num, strlen(num)) | ADD_LIT(b, "}");
  }
  return (rc | ADD_LIT(b, "]")) ? -1 : 0;
}

void sl_hist_set_fallback(sl_history *h, int i, const char *why) {
  if (i >= 0) h->recs[i].fallback = copy_or_null(h, why);
}

void sl_hist_end(sl_history *h, int i, int status, uint64_t t1) {
  if (i < 0) return;
  h->recs[i].status = (unsigned char)status;
  h->recs[i].t1 = t1;
}


void sl_hist_set_error(sl_history *h, int i, const char *kind,
                       const char *msg, const char *where, const char *step) {
  if (i < 0) return;
  sl_hist_rec *r = &h->recs[i];
  r->err_kind = copy_or_null(h, kind);
  r->err_msg = copy_or_null(h, msg);
  r->err_where = copy_or_null(h, where);
  r->err_step = copy_or_null(h, step);
}

const char *sl_hist_status_name(int status) {
  switch (status) {
    case SL_STEP_COMPLETED: return "completed";
    case SL_STEP_FAILED: return "failed";
    case SL_STEP_CANCELLED: return "cancelled";
    default: return "running";
  }
}

static void set_str(lua_State *L, const char *k, const char *v) {
  if (v == NULL) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

void sl_hist_push(lua_State *L, const sl_history *h) {
  luaL_checkstack(L, 4, "history");
  lua_createtable(L, h->n, 0);                      /* steps */
  sl_json_pusharraymt(L);
  lua_setmetatable(L, -2);
  for (int i = 0; i < h->n; i++) {
    const sl_hist_rec *r = &h->recs[i];
    lua_createtable(L, 0, 9);                       /* steps record */
    lua_pushinteger(L, i + 1);
    lua_setfield(L, -2, "id");
    if (r->parent >= 0) {
      lua_pushinteger(L, r->parent + 1);
      lua_setfield(L, -2, "parent");
    }
    if (r->ordinal > 0) {
      lua_pushinteger(L, r->ordinal);
      lua_setfield(L, -2, "index");
    }
    set_str(L, "key", r->key);
    set_str(L, "fallback", r->fallback);
    set_str(L, "path", r->path);
    if (r->restored) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "restored");
    }
    if (r->has_usage) {
      sl_usage_push(L, &r->usage);
      lua_setfield(L, -2, "usage");
    }
    set_str(L, "name", r->name);
    set_str(L, "kind", r->kind);
    set_str(L, "status", sl_hist_status_name(r->status));
    lua_pushinteger(L, r->attempts);
    lua_setfield(L, -2, "attempts");
    lua_pushboolean(L, r->cached);
    lua_setfield(L, -2, "cached");
    uint64_t t1 = r->t1 ? r->t1 : r->t0;
    lua_pushnumber(L, (double)(t1 - r->t0) / 1e6);
    lua_setfield(L, -2, "ms");
    if (r->logs || r->logs_dropped) {
      sl_buf b;
      sl_buf_init(&b);
      if (sl_hist_logs_json(r, &b) == 0 && b.len > 0) {
        if (sl_json_decode(L, b.data, b.len) == 0) lua_setfield(L, -2, "logs");
        else lua_pop(L, 1);
      }
      sl_buf_free(&b);
    }
    if (r->err_kind || r->err_msg) {
      lua_createtable(L, 0, 3);                     /* steps record error */
      set_str(L, "kind", r->err_kind);
      set_str(L, "message", r->err_msg);
      set_str(L, "where", r->err_where);
      set_str(L, "step", r->err_step ? r->err_step : r->name);
      lua_setfield(L, -2, "error");
    }
    lua_rawseti(L, -2, i + 1);
  }
}
