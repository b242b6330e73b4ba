/* loop.c - timers and thread-pool work on the one loop. see loop.h */
#include "core/loop.h"

#include <assert.h>
#include <stdlib.h>

#include "base/log.h"

static uv_loop_t *the_loop;

void loop_init(uv_loop_t *loop)
{
	the_loop = loop;
}

uv_loop_t *loop_get(void)
{
	assert(the_loop != NULL);
	return the_loop;
}

uint64_t loop_now_ms(void)
{
	return uv_now(loop_get());
}

const char *loop_strerror(int err)
{
	return uv_strerror(err);
}

struct work {
	uv_work_t req;
	void (*work)(void *arg);
	void (*after)(void *arg);
	void *arg;
};

static void work_run(uv_work_t *req)
{
	struct work *w = (struct work *)req;

	w->work(w->arg);
}

static void work_after(uv_work_t *req, int status)
{
	struct work *w = (struct work *)req;

	(void)status; /* never cancelled: uv_cancel is not used */
	w->after(w->arg);
	free(w);
}

void loop_work(void (*work)(void *arg), void (*after)(void *arg), void *arg)
{
	struct work *w = xmalloc(sizeof *w);

	*w = (struct work){.work = work, .after = after, .arg = arg};
	if (uv_queue_work(loop_get(), &w->req, work_run, work_after) != 0)
		fatal("event=queue-work-failed");
}

struct timer {
	uv_timer_t h;
	void (*cb)(void *arg);
	void *arg;
};

static void timer_fire(uv_timer_t *h)
{
	struct timer *t = (struct timer *)h;

	t->cb(t->arg);
}

struct timer *timer_new(void (*cb)(void *arg), void *arg)
{
	struct timer *t = xmalloc(sizeof *t);

	uv_timer_init(loop_get(), &t->h);
	t->cb = cb;
	t->arg = arg;
	return t;
}

void timer_start(struct timer *t, uint64_t ms)
{
	uv_timer_start(&t->h, timer_fire, ms, 0);
}

void timer_stop(struct timer *t)
{
	uv_timer_stop(&t->h);
}

void timer_free(struct timer *t)
{
	if (t != NULL)
		uv_close((uv_handle_t *)&t->h, (uv_close_cb)free);
}
