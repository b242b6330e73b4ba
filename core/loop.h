/*
 * loop.h - the one libuv loop, as the rest of the program may use it:
 * one-shot timers and work on the thread pool. Protocols use these and
 * never libuv itself (conn.h is their only other door to the loop).
 */
#ifndef PILLARBOX_LOOP_H
#define PILLARBOX_LOOP_H

#include <stdint.h>
#include <uv.h>

/* Sets the loop every core module uses; once, before anything else. */
void loop_init(uv_loop_t *loop);
/* The loop set by loop_init (core modules only). */
uv_loop_t *loop_get(void);

/* Runs work(arg) on the thread pool, then after(arg) on the loop thread.
 * work must touch nothing the loop thread uses meanwhile. */
void loop_work(void (*work)(void *arg), void (*after)(void *arg), void *arg);

/* The text of a negative libuv error (conn_error()'s): "connection
 * refused". Static storage. */
const char *loop_strerror(int err);

/* The loop's clock in milliseconds (cached at each loop turn). */
uint64_t loop_now_ms(void);

/* A one-shot timer owned by its caller. */
struct timer;

/* A stopped timer that calls cb(arg) on the loop when it fires. */
struct timer *timer_new(void (*cb)(void *arg), void *arg);
/* (Re)starts it: cb runs once, ms milliseconds from now. */
void timer_start(struct timer *t, uint64_t ms);
void timer_stop(struct timer *t);
/* Stops and frees it (the memory goes once libuv has closed the handle).
 * NULL is a no-op. */
void timer_free(struct timer *t);

#endif
