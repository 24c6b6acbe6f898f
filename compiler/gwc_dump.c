/* gwc_dump.c — placeholder */
#include "gwc.h"
void gwc_dump(const GwProgram *p, FILE *out) { (void)p; (void)out; }
void gwc_routes(const GwProgram *p, FILE *out) { (void)p; (void)out; }
