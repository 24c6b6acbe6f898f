/*
** gw.re — the re2c lexer of the gw endpoint language.
**
** It pulls its input through a read callback in chunks of any size (YYFILL
** with a NUL sentinel and bounds checks), so a token may straddle two reads;
** tests feed it one byte at a time and at every split point. Every token
** carries its byte offset in the file.
**
** Strings are lexed piece by piece into a decoded buffer. A string with
** `{expr}` interpolation becomes STRBEG expr (STRMID expr)* STREND; a stack
** remembers the brace depth at which each interpolation opened, so strings
** nest inside interpolations. `{{` and `}}` are literal braces.
**
** Three tokens depend on context, decided here rather than in the grammar:
**   - PATH, a route path, only right after `endpoint METHOD`;
**   - BIND, an identifier followed by `=` (not `==`): a call statement;
**   - STATUS, an integer literal right after `respond` or `fail`.
*/
#include <stdlib.h>
#include <string.h>
#include "gwc.h"
#include "gw_parse.h"

#define MAX_INTERP 32

struct GwcLexer {
  GwcCompiler   *C;
  int            file;
  GwcReadFn      read;
  void          *rctx;
  unsigned char *buf, *lim, *cur, *mar, *ctxm, *tok;
  size_t         cap;
  size_t         base;        /* file offset of buf[0] */
  int            eof;
  int            depth;       /* brace depth outside strings */
  int            interp[MAX_INTERP];
  int            ninterp;
  int            in_string;   /* 1: fresh string, 2: resumed after `}` */
  uint32_t       str_off;
  GwBuf          sb;
  int            prev, prev2;
};

/* Keywords and the words that get a token of their own. Option words
** that only take values share the token OPT; methods share METHOD. */
static const struct { const char *name; int type; } keywords[] = {
  {"import", TK_IMPORT}, {"server", TK_SERVER}, {"backend", TK_BACKEND},
  {"auth", TK_AUTH}, {"limit", TK_LIMIT}, {"cors", TK_CORS},
  {"endpoint", TK_ENDPOINT}, {"respond", TK_RESPOND}, {"fail", TK_FAIL},
  {"proxy", TK_PROXY}, {"header", TK_HEADER}, {"headers", TK_HEADERS},
  {"query", TK_QUERY}, {"body", TK_BODY}, {"if", TK_IF}, {"or", TK_OR},
  {"optional", TK_OPTIONAL}, {"default", TK_DEFAULT}, {"cache", TK_CACHE},
  {"by", TK_BY}, {"timeout", TK_TIMEOUT}, {"burst", TK_BURST},
  {"store", TK_STORE}, {"on_error", TK_ON_ERROR}, {"jwt", TK_JWT},
  {"apikey", TK_APIKEY}, {"none", TK_NONE}, {"true", TK_TRUE},
  {"false", TK_FALSE}, {"null", TK_NULL}, {"in", TK_IN},
  {"listen", TK_LISTEN}, {"tls", TK_TLS}, {"key", TK_KEY}, {"keys", TK_KEYS},
  {"jwks", TK_JWKS}, {"file", TK_FILE}, {"url", TK_URL}, {"from", TK_FROM},
  {"bearer", TK_BEARER}, {"cookie", TK_COOKIE}, {"refresh", TK_REFRESH},
  {"require", TK_REQUIRE},
  {"GET", TK_METHOD}, {"POST", TK_METHOD}, {"PUT", TK_METHOD},
  {"PATCH", TK_METHOD}, {"DELETE", TK_METHOD}, {"HEAD", TK_METHOD},
  {"OPTIONS", TK_METHOD},
  /* option words (OPT) */
  {"admin", TK_OPT}, {"drain", TK_OPT}, {"workers", TK_OPT},
  {"max_body", TK_OPT}, {"max_header", TK_OPT}, {"max_headers", TK_OPT},
  {"max_request_line", TK_OPT}, {"header_timeout", TK_OPT},
  {"body_timeout", TK_OPT}, {"idle_timeout", TK_OPT},
  {"max_connections", TK_OPT}, {"cache_size", TK_OPT},
  {"trusted_proxies", TK_OPT}, {"redis", TK_OPT}, {"redis_timeout", TK_OPT},
  {"max_json_depth", TK_OPT}, {"limit_keys", TK_OPT},
  {"balance", TK_OPT}, {"connect_timeout", TK_OPT}, {"retries", TK_OPT},
  {"max_response", TK_OPT}, {"breaker", TK_OPT}, {"health", TK_OPT},
  {"issuer", TK_OPT}, {"audience", TK_OPT}, {"leeway", TK_OPT},
  {"algorithms", TK_OPT}, {"origins", TK_OPT}, {"methods", TK_OPT},
  {"credentials", TK_OPT}, {"max_age", TK_OPT}, {"expose_headers", TK_OPT},
  {"failures", TK_OPT}, {"window", TK_OPT}, {"cooldown", TK_OPT},
  {"path", TK_OPT}, {"every", TK_OPT}, {"ca", TK_OPT}, {"cert", TK_OPT},
  {"verify", TK_OPT},
};
#define NKEYWORDS (int)(sizeof keywords / sizeof keywords[0])

const char *const gwc_keywords[] = {
  "import", "server", "backend", "auth", "limit", "cors", "endpoint", "respond",
  "fail", "proxy", "header", "headers", "query", "body", "if", "or", "optional",
  "default", "cache", "by", "timeout", "burst", "store", "on_error", "jwt",
  "apikey", "none", "true", "false", "null", "in", "listen", "tls", "key",
  "keys", "jwks", "file", "url", "from", "bearer", "cookie", "refresh",
  "require", "admin", "drain", "workers", "max_body", "max_header",
  "max_headers", "max_request_line", "header_timeout", "body_timeout",
  "idle_timeout", "max_connections", "cache_size", "trusted_proxies", "redis",
  "redis_timeout", "max_json_depth", "limit_keys", "balance", "connect_timeout", "retries",
  "max_response", "breaker", "health", "issuer", "audience", "leeway",
  "algorithms", "origins", "methods", "credentials", "max_age",
  "expose_headers", "failures", "window", "cooldown", "path", "every", "ca",
  "cert", "verify", NULL
};

static int keyword(const char *s, size_t n) {
  for (int i = 0; i < NKEYWORDS; i++)
    if (strlen(keywords[i].name) == n && memcmp(keywords[i].name, s, n) == 0)
      return keywords[i].type;
  return TK_ID;
}

GwcLexer *gwc_lexer_new(GwcCompiler *C, int file, GwcReadFn read, void *ctx) {
  GwcLexer *L = calloc(1, sizeof *L);
  if (!L) abort();
  L->C = C; L->file = file; L->read = read; L->rctx = ctx;
  L->cap = 4096;
  L->buf = malloc(L->cap);
  if (!L->buf) abort();
  L->lim = L->cur = L->mar = L->ctxm = L->tok = L->buf;
  *L->lim = 0;
  return L;
}

void gwc_lexer_free(GwcLexer *L) {
  if (!L) return;
  gw_buf_free(&L->sb);
  free(L->buf);
  free(L);
}

int gwc_lexer_depth(GwcLexer *L) { return L->depth; }

/* Move the unread part of the buffer (from tok) to the front and read
** more. Returns 0 when something was read, 1 at the end of input. */
static int fill(GwcLexer *L) {
  if (L->eof) return 1;
  size_t keep = (size_t)(L->lim - L->tok);
  size_t shift = (size_t)(L->tok - L->buf);
  if (shift) {
    memmove(L->buf, L->tok, keep);
    L->cur -= shift; L->mar -= shift; L->ctxm -= shift; L->tok -= shift;
    L->lim -= shift; L->base += shift;
  }
  if (L->cap - keep < 1024) {           /* a long token: grow */
    size_t cap = L->cap * 2;
    unsigned char *nb = realloc(L->buf, cap);
    if (!nb) abort();
    L->cur = nb + (L->cur - L->buf); L->mar = nb + (L->mar - L->buf);
    L->ctxm = nb + (L->ctxm - L->buf); L->tok = nb + (L->tok - L->buf);
    L->lim = nb + (L->lim - L->buf);
    L->buf = nb; L->cap = cap;
  }
  size_t n = L->read(L->rctx, (char *)L->lim, L->cap - keep - 1);
  if (n == 0) { L->eof = 1; *L->lim = 0; return 1; }
  L->lim += n;
  *L->lim = 0;
  return 0;
}

static uint32_t off_of(GwcLexer *L, const unsigned char *p) {
  return (uint32_t)(L->base + (size_t)(p - L->buf));
}

static void lex_error(GwcLexer *L, uint32_t off, uint32_t len, const char *msg, const char *what) {
  if (what) gwc_diag(L->C, DIAG_ERROR, L->file, off, len, "%s '%s'", msg, what);
  else gwc_diag(L->C, DIAG_ERROR, L->file, off, len, "%s", msg);
}

static void utf8(GwBuf *b, unsigned cp) {
  char o[4];
  if (cp < 0x80) { o[0] = (char)cp; gw_buf_add(b, o, 1); }
  else if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); gw_buf_add(b, o, 2); }
  else if (cp < 0x10000) { o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F)); gw_buf_add(b, o, 3); }
  else { o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F)); o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); gw_buf_add(b, o, 4); }
}


static unsigned hex4(const unsigned char *p) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = p[i];
    v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  return v;
}

/*!re2c
  re2c:api:style = free-form;
  re2c:define:YYCTYPE = "unsigned char";
  re2c:define:YYCURSOR = "L->cur";
  re2c:define:YYMARKER = "L->mar";
  re2c:define:YYCTXMARKER = "L->ctxm";
  re2c:define:YYLIMIT = "L->lim";
  re2c:define:YYFILL = "fill(L) == 0";
  re2c:eof = 0;
  re2c:yyfill:enable = 1;

  id     = [A-Za-z_][A-Za-z0-9_]*;
  ws     = [ \t\r\n];
  digits = [0-9]+;
  int    = "0" | [1-9][0-9]*;
  number = int ("." [0-9]+)? ([eE] [+-]? [0-9]+)?;
  hex    = [0-9a-fA-F];
  pchar  = [^ \t\r\n{}#"\x00];
  pparam = "{" [^{}/ \t\r\n#"\x00]* "}";   /* checked by gwc_sema.c */
*/

/* The rest of a string after its opening quote (or after the `}` that
** closed an interpolation). Fills t with STRING, STRBEG, STRMID or STREND. */
static int lex_string(GwcLexer *L, GwcToken *t) {
  int resumed = L->in_string == 2;
  for (;;) {
    L->tok = L->cur;
    /*!re2c
      [^"\\{}\n\x00]+ { gw_buf_add(&L->sb, L->tok, (size_t)(L->cur - L->tok)); continue; }
      "\\\""  { gw_buf_addc(&L->sb, '"'); continue; }
      "\\\\"  { gw_buf_addc(&L->sb, '\\'); continue; }
      "\\/"   { gw_buf_addc(&L->sb, '/'); continue; }
      "\\n"   { gw_buf_addc(&L->sb, '\n'); continue; }
      "\\t"   { gw_buf_addc(&L->sb, '\t'); continue; }
      "\\r"   { gw_buf_addc(&L->sb, '\r'); continue; }
      "\\u" hex{4} "\\u" hex{4} {
          unsigned hi = hex4(L->tok + 2), lo = hex4(L->tok + 8);
          if (hi >= 0xD800 && hi < 0xDC00 && lo >= 0xDC00 && lo < 0xE000) {
            utf8(&L->sb, 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00));
          } else if ((hi >= 0xD800 && hi < 0xE000) || (lo >= 0xD800 && lo < 0xE000) || hi == 0 || lo == 0) {
            lex_error(L, off_of(L, L->tok), 12, "invalid \\u escape (lone surrogate or NUL)", NULL);
          } else { utf8(&L->sb, hi); utf8(&L->sb, lo); }
          continue;
      }
      "\\u" hex{4} {
          unsigned cp = hex4(L->tok + 2);
          if ((cp >= 0xD800 && cp < 0xE000) || cp == 0)
            lex_error(L, off_of(L, L->tok), 6, "invalid \\u escape (lone surrogate or NUL)", NULL);
          else utf8(&L->sb, cp);
          continue;
      }
      "\\" [^\x00\n]? {
          lex_error(L, off_of(L, L->tok), (uint32_t)(L->cur - L->tok),
                    "invalid escape in string (use \\\" \\\\ \\n \\t \\r \\/ \\uXXXX)", NULL);
          continue;
      }
      "{{"    { gw_buf_addc(&L->sb, '{'); continue; }
      "}}"    { gw_buf_addc(&L->sb, '}'); continue; }
      "}"     { lex_error(L, off_of(L, L->tok), 1, "a lone '}' in a string; write '}}' for a brace", NULL); continue; }
      "{" {
          if (L->ninterp >= MAX_INTERP) {
            lex_error(L, off_of(L, L->tok), 1, "string interpolation nested too deeply", NULL);
            continue;
          }
          L->interp[L->ninterp++] = L->depth;
          L->in_string = 0;
          t->type = resumed ? TK_STRMID : TK_STRBEG;
          goto done;
      }
      "\"" {
          L->in_string = 0;
          t->type = resumed ? TK_STREND : TK_STRING;
          goto done;
      }
      "\x00" { lex_error(L, off_of(L, L->tok), 1, "NUL byte in string", NULL); continue; }
      "\n" {
          L->cur--;                    /* the newline belongs to the next token */
          lex_error(L, L->str_off, 1, "unterminated string", NULL);
          L->in_string = 0;
          L->ninterp = 0;              /* abandon any interpolation it was in */
          t->type = resumed ? TK_STREND : TK_STRING;
          goto done;
      }
      $ {
          lex_error(L, L->str_off, 1, "unterminated string", NULL);
          L->in_string = 0;
          t->type = resumed ? TK_STREND : TK_STRING;
          goto done;
      }
    */
  }
done:
  t->off = L->str_off;
  t->len = off_of(L, L->cur) - L->str_off;
  if (!gw_utf8_valid(L->sb.p ? L->sb.p : "", L->sb.n))
    lex_error(L, t->off, t->len, "string is not valid UTF-8", NULL);
  t->s = gw_arena_strndup(&L->C->arena, L->sb.p ? L->sb.p : "", L->sb.n);
  t->n = L->sb.n;
  return t->type;
}

static int lex_token(GwcLexer *L, GwcToken *t) {
  for (;;) {
    L->tok = L->cur;
    if (L->in_string) {
      if (L->in_string == 1) { L->str_off = off_of(L, L->tok); L->sb.n = 0; }
      return lex_string(L, t);
    }
    t->s = NULL; t->n = 0;
    /*!re2c
      $       { t->type = 0; goto done; }
      ws+     { continue; }
      "\xEF\xBB\xBF" {
          if (off_of(L, L->tok) == 0) continue;     /* a UTF-8 byte order mark */
          lex_error(L, off_of(L, L->tok), 3, "invalid character", "U+FEFF");
          continue;
      }
      "#" [^\n\x00]* {
          if (L->C->keep_comments) {
            GwcToken c = { 0, off_of(L, L->tok), (uint32_t)(L->cur - L->tok), NULL, 0, L->file };
            c.s = gw_arena_strndup(&L->C->arena, (const char *)L->tok, (size_t)(L->cur - L->tok));
            c.n = (size_t)(L->cur - L->tok);
            Node *n = gwc_node(L->C, 0, &c);
            GwcFile *f = L->C->files[L->file];
            f->comments = gwc_append(f->comments, n);
          }
          continue;
      }
      "\"" {
          L->in_string = 1;
          L->cur = L->tok;             /* let the string code see the quote's offset */
          L->str_off = off_of(L, L->tok);
          L->sb.n = 0;
          L->cur++;
          return lex_string(L, t);
      }
      "/" pchar* (pparam pchar*)* {
          if (L->prev2 == TK_ENDPOINT && (L->prev == TK_METHOD || L->prev == TK_STAR)) { t->type = TK_PATH; goto text; }
          L->cur = L->tok + 1; t->type = TK_SLASH; goto done;
      }
      id / ws* "=" [^=] { t->type = TK_BIND; goto text; }
      id {
          t->type = keyword((const char *)L->tok, (size_t)(L->cur - L->tok));
          goto text;
      }
      number {
          t->type = TK_NUMBER;
          if ((L->prev == TK_RESPOND || L->prev == TK_FAIL) &&
              strspn((const char *)L->tok, "0123456789") == (size_t)(L->cur - L->tok))
            t->type = TK_STATUS;
          goto text;
      }
      digits ("ms" | "s" | "m" | "h" | "d")        { t->type = TK_DURATION; goto text; }
      digits ("b" | "kb" | "mb" | "gb")            { t->type = TK_SIZE; goto text; }
      digits "/" ("s" | "sec" | "second" | "m" | "min" | "minute" | "h" | "hour" | "d" | "day") { t->type = TK_RATE; goto text; }
      /* Malformed literals are reported and still returned as the token
      ** they resemble, so the parser does not cascade. */
      digits "/" [A-Za-z][A-Za-z0-9_]* {
          lex_error(L, off_of(L, L->tok), (uint32_t)(L->cur - L->tok),
                    "invalid rate (units: /s /min /h /day; write 'a / b' with spaces to divide)", NULL);
          t->type = TK_RATE; goto text;
      }
      [0-9] [0-9A-Za-z_]* ("." [0-9A-Za-z_]+)? {
          char *s = gw_arena_strndup(&L->C->arena, (const char *)L->tok, (size_t)(L->cur - L->tok));
          lex_error(L, off_of(L, L->tok), (uint32_t)(L->cur - L->tok), "invalid number", s);
          t->type = TK_NUMBER; goto text;
      }
      "{"   { L->depth++; t->type = TK_LBRACE; goto done; }
      "}" {
          if (L->ninterp > 0 && L->interp[L->ninterp - 1] == L->depth) {
            L->ninterp--;
            L->in_string = 2;
            L->str_off = off_of(L, L->tok);
            L->sb.n = 0;
            return lex_string(L, t);
          }
          if (L->depth > 0) L->depth--;
          t->type = TK_RBRACE; goto done;
      }
      "["   { t->type = TK_LBRACKET; goto done; }
      "]"   { t->type = TK_RBRACKET; goto done; }
      "("   { t->type = TK_LPAREN; goto done; }
      ")"   { t->type = TK_RPAREN; goto done; }
      ","   { t->type = TK_COMMA; goto done; }
      ":"   { t->type = TK_COLON; goto done; }
      ";"   { t->type = TK_SEMI; goto done; }
      "..." { t->type = TK_DOTDOTDOT; goto done; }
      "."   { t->type = TK_DOT; goto done; }
      "??"  { t->type = TK_QQ; goto done; }
      "?"   { t->type = TK_QUESTION; goto done; }
      "||"  { t->type = TK_OROR; goto done; }
      "&&"  { t->type = TK_ANDAND; goto done; }
      "=="  { t->type = TK_EQ; goto done; }
      "!="  { t->type = TK_NE; goto done; }
      "<="  { t->type = TK_LE; goto done; }
      ">="  { t->type = TK_GE; goto done; }
      "<"   { t->type = TK_LT; goto done; }
      ">"   { t->type = TK_GT; goto done; }
      "="   { t->type = TK_ASSIGN; goto done; }
      "!"   { t->type = TK_NOT; goto done; }
      "+"   { t->type = TK_PLUS; goto done; }
      "-"   { t->type = TK_MINUS; goto done; }
      "*"   { t->type = TK_STAR; goto done; }
      "%"   { t->type = TK_PERCENT; goto done; }
      "/"   { t->type = TK_SLASH; goto done; }
      * {
          unsigned c = L->tok[0];
          char what[8];
          if (c >= 0x20 && c < 0x7f) { what[0] = (char)c; what[1] = 0; }
          else snprintf(what, sizeof what, "\\x%02x", c);
          lex_error(L, off_of(L, L->tok), 1, "invalid character", what);
          continue;
      }
    */
  }
text:
  t->s = gw_arena_strndup(&L->C->arena, (const char *)L->tok, (size_t)(L->cur - L->tok));
  t->n = (size_t)(L->cur - L->tok);
done:
  t->off = off_of(L, L->tok);
  t->len = (uint32_t)(L->cur - L->tok);
  return t->type;
}

int gwc_lex(GwcLexer *L, GwcToken *t) {
  t->file = L->file;
  int type = lex_token(L, t);
  if (type == 0) {
    t->off = off_of(L, L->cur); t->len = 0; t->s = ""; t->n = 0;
    if (L->ninterp > 0)
      lex_error(L, t->off, 0, "unterminated string interpolation at end of file", NULL);
    L->ninterp = 0;
  }
  L->prev2 = L->prev;
  L->prev = type;
  return type;
}

const char *gwc_token_name(int type) {
  switch (type) {
  case 0: return "end of file";
  case TK_ID: return "identifier";
  case TK_BIND: return "identifier";
  case TK_STRING: case TK_STRBEG: return "string";
  case TK_STRMID: case TK_STREND: return "string";
  case TK_NUMBER: return "number";
  case TK_STATUS: return "status code";
  case TK_DURATION: return "duration";
  case TK_SIZE: return "size";
  case TK_RATE: return "rate";
  case TK_PATH: return "route path";
  case TK_METHOD: return "method";
  default: return NULL;   /* the caller shows the token's text */
  }
}
