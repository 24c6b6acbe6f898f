/* gwc_fmt.c — placeholder, replaced below */
#include "gwc.h"
void gwc_format(GwcCompiler *C, int file, GwBuf *out) {
  gw_buf_add(out, C->files[file]->text, C->files[file]->len);
}
