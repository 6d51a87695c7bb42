/* The version of specd and specd-cli (--version, the daemon's `info`). */
#ifndef SD_VERSION_H
#define SD_VERSION_H
#define SD_VERSION "0.1.0"
#endif
