/* event.c - a fixed list of subscribers. see event.h */
#include "core/event.h"

#include <stddef.h>

#include "base/log.h"

static struct {
	void (*fn)(const struct event *ev, void *arg);
	void *arg;
} subs[EVENT_SUBSCRIBERS_MAX];
static size_t nsubs;

void event_subscribe(void (*fn)(const struct event *ev, void *arg), void *arg)
{
	if (nsubs == EVENT_SUBSCRIBERS_MAX)
		fatal("event=subscribe error=too-many");
	subs[nsubs].fn = fn;
	subs[nsubs].arg = arg;
	nsubs++;
}

void event_reset(void)
{
	nsubs = 0;
}

void event_emit(const struct event *ev)
{
	for (size_t i = 0; i < nsubs; i++)
		subs[i].fn(ev, subs[i].arg);
}
