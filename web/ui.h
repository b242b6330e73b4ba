/*
 * ui.h - the console's pages (the files of web/ui/), compiled into the binary
 * at build time: web/ui/embed.sh turns each file into a C array with xxd -i
 * (build/web_ui.c), so the console works offline and from one file.
 */
#ifndef PILLARBOX_WEB_UI_H
#define PILLARBOX_WEB_UI_H

#include <stddef.h>

struct web_asset {
	const char *path; /* "/" for index.html, else "/NAME" */
	const char *type; /* Content-Type */
	const unsigned char *data;
	size_t len;
};

extern const struct web_asset web_ui_assets[];
extern const size_t web_ui_nassets;

#endif
