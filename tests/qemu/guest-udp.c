/* SPDX-License-Identifier: MIT */
/* Runs inside the test guest (built static by make-guest.sh): UDP datagrams from
 * 10.0.0.1:5000 to 10.0.0.2:6000, which the switch (testpmd, 5tswap) sends back with
 * addresses and ports swapped. Every payload is derived from its sequence number.
 *
 * It reads in phases (send for half a second, then drain), so that a few hundred datagrams
 * wait in the socket at any time. virtio-net keeps all but the first 128 bytes of each in
 * the receive buffer the back-end wrote, so if the back-end's writes during a live migration
 * were not logged, the destination has stale pages under those datagrams: a wrong payload, a
 * sequence number seen before, an IP header error (a frame that was never written there
 * reads as zeros), or a UDP checksum error (the device is set up without
 * checksum offload, so the guest verifies every checksum as it copies the data). The test
 * reads the counters this prints once a second on the console. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 1200
#define MAGIC 0x56524d47u

static uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fill(uint8_t *b, uint32_t seq) {
        uint32_t magic = MAGIC;
        memcpy(b, &magic, 4);
        memcpy(b + 4, &seq, 4);
        for (unsigned i = 8; i < PAYLOAD; i++)
                b[i] = (uint8_t) (seq * 31 + i * 7);
}

/* A counter of /proc/net/snmp, e.g. ("Udp:", "InCsumErrors"): for each protocol a line of
 * names, then one of values. */
static long long snmp_counter(const char *proto, const char *name) {
        char names[1024], values[1024], line[1024];
        FILE *f = fopen("/proc/net/snmp", "re");
        long long v = -1;

        if (!f)
                return -1;
        names[0] = 0;
        while (fgets(line, sizeof(line), f)) {
                if (strncmp(line, proto, strlen(proto)) != 0)
                        continue;
                if (!names[0]) {
                        snprintf(names, sizeof(names), "%s", line);
                        continue;
                }
                snprintf(values, sizeof(values), "%s", line);
                char *sn = NULL, *sv = NULL;
                char *n = strtok_r(names, " \n", &sn), *val = strtok_r(values, " \n", &sv);
                while (n && val) {
                        if (strcmp(n, name) == 0)
                                v = atoll(val);
                        n = strtok_r(NULL, " \n", &sn);
                        val = strtok_r(NULL, " \n", &sv);
                }
                break;
        }
        fclose(f);
        return v;
}

int main(void) {
        struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons(5000) };
        struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons(6000) };
        uint8_t out[PAYLOAD], in[2048], want[PAYLOAD];
        uint32_t seq = 0, last = 0;
        unsigned long long sent = 0, recvd = 0, bad = 0, stale = 0;
        bool any = false;

        inet_pton(AF_INET, "10.0.0.1", &me.sin_addr);
        inet_pton(AF_INET, "10.0.0.2", &peer.sin_addr);
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s < 0) {
                perror("socket");
                return 1;
        }
        /* No ARP on the other side: a static neighbour (5tswap sends back to our own MAC). */
        struct arpreq ar = { .arp_flags = ATF_COM | ATF_PERM };
        memcpy(&ar.arp_pa, &peer, sizeof(peer));
        ar.arp_ha.sa_family = ARPHRD_ETHER;
        memcpy(ar.arp_ha.sa_data, "\x02\x00\x00\x00\x00\x02", 6);
        snprintf(ar.arp_dev, sizeof(ar.arp_dev), "eth0");
        if (ioctl(s, SIOCSARP, &ar) < 0)
                perror("SIOCSARP");
        int rcvbuf = 8 << 20;
        (void) setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
        if (bind(s, (struct sockaddr *) &me, sizeof(me)) < 0 || connect(s, (struct sockaddr *) &peer, sizeof(peer)) < 0) {
                perror("bind/connect");
                return 1;
        }
        fcntl(s, F_SETFL, O_NONBLOCK);
        printf("UDP START\n");
        fflush(stdout);

        uint64_t next_report = now_ms() + 1000;
        for (;;) {
                /* half a second of sending, nothing read: the datagrams pile up */
                uint64_t until = now_ms() + 500;
                while (now_ms() < until) {
                        fill(out, seq);
                        if (send(s, out, PAYLOAD, 0) == PAYLOAD) {
                                seq++;
                                sent++;
                        }
                        usleep(2000);
                }
                /* then all of them */
                for (;;) {
                        ssize_t n = recv(s, in, sizeof(in), 0);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0)
                                break;
                        uint32_t magic, got;
                        memcpy(&magic, in, 4);
                        memcpy(&got, in + 4, 4);
                        recvd++;
                        fill(want, got);
                        if (n != PAYLOAD || magic != MAGIC || memcmp(in, want, PAYLOAD) != 0) {
                                bad++;
                                continue;
                        }
                        if (any && got <= last) {
                                stale++;        /* an old datagram again: a page that went back in time */
                                continue;
                        }
                        last = got;
                        any = true;
                }
                if (now_ms() >= next_report) {
                        /* a stale page under a whole frame: an IP header gone bad (or zeros) */
                        printf("UDP sent=%llu recv=%llu bad=%llu stale=%llu csumerr=%lld iphdrerr=%lld last=%u\n",
                               sent, recvd, bad, stale, snmp_counter("Udp:", "InCsumErrors"),
                               snmp_counter("Ip:", "InHdrErrors"), last);
                        fflush(stdout);
                        next_report = now_ms() + 1000;
                }
        }
}
