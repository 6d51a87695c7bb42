/* The systemd readiness protocol (sd_notify), written by hand so no libsystemd is needed: a datagram
 * such as "READY=1" to the Unix socket named by $NOTIFY_SOCKET ("@name": the abstract namespace). Without
 * $NOTIFY_SOCKET (not started by systemd with Type=notify) it does nothing. */
#ifndef SD_NOTIFY_H
#define SD_NOTIFY_H

/* Sends state ("READY=1", "STOPPING=1", "STATUS=..."; lines joined by '\n'); 0, or -1 when
 * $NOTIFY_SOCKET is set but the message could not be sent. */
int sd_notify_systemd(const char *state);

#endif
