/* sacm._fs: file operations on libuv's threadpool.
 *
 * Each operation copies its arguments into a request, a worker thread does plain blocking POSIX
 * calls with them, and after_work (on the loop thread) turns the outcome into Lua values and calls
 * the callback: callback(result) or callback(nil, err). The loop never waits for a disk.
 * Workers never touch Lua; after_work is the only place that does. lua/sacm/fs.lua wraps these
 * into calls that yield the task. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include "sacmrun.h"

enum fs_op { OP_READ, OP_WRITE, OP_STAT, OP_LIST, OP_MKDIR, OP_REMOVE, OP_RENAME, OP_READLINK };

typedef struct {
    char *name;
    unsigned char type; /* a DT_* value */
} dir_entry;

typedef struct {
    uv_work_t work;
    enum fs_op op;
    int cb_ref;

    /* arguments */
    char *path;
    char *path2;       /* rename's destination */
    char *input;       /* write's data */
    size_t input_len;
    size_t max_bytes;  /* read */
    int mode;          /* write, mkdir: -1 when not given */
    int flag;          /* write: atomic; stat: follow links; mkdir: parents */
    int append;        /* write */

    /* outcome */
    int err;           /* errno of the failure, 0 on success */
    const char *what;  /* the call that failed, for the message */
    int too_big;       /* read: larger than max_bytes */
    char *output;      /* read: contents; readlink: the target */
    size_t output_len;
    struct stat st;
    dir_entry *entries;
    size_t n_entries;
} fs_req;

static void req_free(fs_req *r)
{
    free(r->path);
    free(r->path2);
    free(r->input);
    free(r->output);
    for (size_t i = 0; i < r->n_entries; i++)
        free(r->entries[i].name);
    free(r->entries);
    free(r);
}

static int fail(fs_req *r, const char *what)
{
    r->err = errno ? errno : EIO;
    r->what = what;
    return -1;
}

/* ---- helpers for workers ---- */

static int clear_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0)
        return -1;
    return fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static int close_checked(int fd)
{
    /* close may report a delayed write error (NFS); EINTR still closed the descriptor */
    if (close(fd) != 0 && errno != EINTR)
        return -1;
    return 0;
}

/* ---- read ---- */

static void do_read(fs_req *r)
{
    /* O_NONBLOCK for the open only: a FIFO without a writer must not hang a worker forever. */
    int fd = open(r->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        fail(r, "open");
        return;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || clear_nonblock(fd) != 0) {
        fail(r, "stat");
        close(fd);
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        fail(r, "read");
        close(fd);
        return;
    }
    if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > r->max_bytes) {
        r->too_big = 1;
        r->st = st;
        close(fd);
        return;
    }
    /* Regular files are usually read in one go; /proc files and devices say size 0. */
    size_t cap = S_ISREG(st.st_mode) && st.st_size > 0 ? (size_t)st.st_size + 1 : 16384;
    if (cap > r->max_bytes + 1)
        cap = r->max_bytes + 1;
    char *buf = malloc(cap);
    size_t len = 0;
    if (buf == NULL) {
        errno = ENOMEM;
        fail(r, "read");
        close(fd);
        return;
    }
    for (;;) {
        if (len == cap) {
            if (len > r->max_bytes) {
                r->too_big = 1;
                break;
            }
            size_t grown_cap = cap * 2;
            if (grown_cap > r->max_bytes + 1)
                grown_cap = r->max_bytes + 1;
            char *grown = realloc(buf, grown_cap);
            if (grown == NULL) {
                errno = ENOMEM;
                fail(r, "read");
                break;
            }
            buf = grown;
            cap = grown_cap;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail(r, "read");
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (len > r->max_bytes)
        r->too_big = 1;
    if (r->err || r->too_big) {
        free(buf);
        return;
    }
    r->output = buf;
    r->output_len = len;
}

/* ---- write ---- */

static void do_write_plain(fs_req *r)
{
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (r->append ? O_APPEND : O_TRUNC);
    int fd = open(r->path, flags, r->mode >= 0 ? (mode_t)r->mode : 0666);
    if (fd < 0) {
        fail(r, "open");
        return;
    }
    if (clear_nonblock(fd) != 0 || write_all(fd, r->input, r->input_len) != 0) {
        fail(r, "write");
        close(fd);
        return;
    }
    if (r->mode >= 0 && fchmod(fd, (mode_t)r->mode) != 0) {
        fail(r, "chmod");
        close(fd);
        return;
    }
    if (close_checked(fd) != 0)
        fail(r, "close");
}

/* Opens a new file next to target named .<base>.<random>.tmp; fills tmp with its path. The file
 * is created with mode (less the umask): with the caller's mode rather than 0666, a private key
 * written 0600 is never readable by others, not even between the write and the fchmod. */
static int open_temp(const char *dir, const char *base, char *tmp, size_t size, mode_t mode)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        uint64_t rnd;
        if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            rnd = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)getpid() ^ (uint64_t)attempt;
        }
        int n = snprintf(tmp, size, "%s/.%s.%016llx.tmp", dir, base, (unsigned long long)rnd);
        if (n < 0 || (size_t)n >= size) {
            errno = ENAMETOOLONG;
            return -1;
        }
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, mode);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

static void do_write_atomic(fs_req *r)
{
    /* Writing through a symlink replaces the file it points to, not the link. */
    char resolved[PATH_MAX];
    const char *target = r->path;
    struct stat lst;
    if (lstat(r->path, &lst) == 0 && S_ISLNK(lst.st_mode) && realpath(r->path, resolved) != NULL)
        target = resolved;

    struct stat old;
    int replacing = stat(target, &old) == 0;

    char dir[PATH_MAX];
    const char *base;
    const char *slash = strrchr(target, '/');
    if (slash == NULL) {
        strcpy(dir, ".");
        base = target;
    } else {
        size_t dlen = (size_t)(slash - target);
        if (dlen >= sizeof dir) {
            errno = ENAMETOOLONG;
            fail(r, "open");
            return;
        }
        if (dlen == 0) {
            strcpy(dir, "/");
        } else {
            memcpy(dir, target, dlen);
            dir[dlen] = '\0';
        }
        base = slash + 1;
    }
    if (*base == '\0') {
        errno = EISDIR;
        fail(r, "write");
        return;
    }

    char tmp[PATH_MAX + 64];
    /* no mode given: 0666 so the umask decides, as for any new file */
    int fd = open_temp(strcmp(dir, "/") == 0 ? "" : dir, base, tmp, sizeof tmp,
                       r->mode >= 0 ? (mode_t)r->mode : 0666);
    if (fd < 0) {
        fail(r, "create temporary file for");
        return;
    }
    const char *step = NULL;
    if (write_all(fd, r->input, r->input_len) != 0)
        step = "write";
    else if (r->mode >= 0 && fchmod(fd, (mode_t)r->mode) != 0)
        step = "chmod";
    else if (r->mode < 0 && replacing && fchmod(fd, old.st_mode & 07777) != 0)
        step = "chmod";
    if (step == NULL && replacing && (old.st_uid != geteuid() || old.st_gid != getegid())) {
        /* keep the owner when we may (root); otherwise the file becomes ours, as with any editor */
        if (fchown(fd, old.st_uid, old.st_gid) != 0) {
            /* not an error */
        }
    }
    if (step == NULL && fsync(fd) != 0)
        step = "fsync";
    if (step != NULL) {
        fail(r, step);
        close(fd);
        unlink(tmp);
        return;
    }
    if (close_checked(fd) != 0) {
        fail(r, "close");
        unlink(tmp);
        return;
    }
    if (rename(tmp, target) != 0) {
        fail(r, "rename");
        unlink(tmp);
        return;
    }
    /* the rename itself is durable only once the directory is */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) != 0 && errno != EINVAL && errno != EROFS)
            fail(r, "fsync directory of");
        close(dfd);
    }
}

/* ---- stat, list ---- */

static const char *type_name_of_mode(mode_t m)
{
    if (S_ISREG(m)) return "file";
    if (S_ISDIR(m)) return "directory";
    if (S_ISLNK(m)) return "link";
    if (S_ISSOCK(m)) return "socket";
    if (S_ISFIFO(m)) return "fifo";
    if (S_ISCHR(m)) return "char";
    if (S_ISBLK(m)) return "block";
    return "unknown";
}

static const char *type_name_of_dt(unsigned char t)
{
    switch (t) {
    case DT_REG: return "file";
    case DT_DIR: return "directory";
    case DT_LNK: return "link";
    case DT_SOCK: return "socket";
    case DT_FIFO: return "fifo";
    case DT_CHR: return "char";
    case DT_BLK: return "block";
    default: return "unknown";
    }
}

static unsigned char dt_of_mode(mode_t m)
{
    if (S_ISREG(m)) return DT_REG;
    if (S_ISDIR(m)) return DT_DIR;
    if (S_ISLNK(m)) return DT_LNK;
    if (S_ISSOCK(m)) return DT_SOCK;
    if (S_ISFIFO(m)) return DT_FIFO;
    if (S_ISCHR(m)) return DT_CHR;
    if (S_ISBLK(m)) return DT_BLK;
    return DT_UNKNOWN;
}

static void do_stat(fs_req *r)
{
    int rc = r->flag ? stat(r->path, &r->st) : lstat(r->path, &r->st);
    if (rc != 0)
        fail(r, r->flag ? "stat" : "lstat");
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const dir_entry *)a)->name, ((const dir_entry *)b)->name);
}

static void do_list(fs_req *r)
{
    DIR *d = opendir(r->path);
    if (d == NULL) {
        fail(r, "opendir");
        return;
    }
    size_t cap = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (e == NULL) {
            if (errno != 0)
                fail(r, "readdir");
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (r->n_entries == cap) {
            size_t ncap = cap ? cap * 2 : 32;
            dir_entry *grown = realloc(r->entries, ncap * sizeof *grown);
            if (grown == NULL) {
                errno = ENOMEM;
                fail(r, "readdir");
                break;
            }
            r->entries = grown;
            cap = ncap;
        }
        unsigned char type = e->d_type;
        if (type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                type = dt_of_mode(st.st_mode);
        }
        char *name = strdup(e->d_name);
        if (name == NULL) {
            errno = ENOMEM;
            fail(r, "readdir");
            break;
        }
        r->entries[r->n_entries].name = name;
        r->entries[r->n_entries].type = type;
        r->n_entries++;
    }
    closedir(d);
    if (r->err == 0 && r->n_entries > 1)
        qsort(r->entries, r->n_entries, sizeof *r->entries, entry_cmp);
}

/* ---- mkdir, remove, rename ---- */

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void do_mkdir(fs_req *r)
{
    mode_t mode = r->mode >= 0 ? (mode_t)r->mode : 0777;
    if (r->flag) {
        /* parents: create each missing ancestor with the default mode, like mkdir -p */
        char *p = r->path;
        for (char *s = strchr(p + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
            *s = '\0';
            int rc = mkdir(p, 0777);
            int saved = errno;
            int ok = rc == 0 || (saved == EEXIST && is_dir(p));
            *s = '/';
            if (!ok) {
                errno = saved == EEXIST ? ENOTDIR : saved;
                fail(r, "mkdir");
                return;
            }
        }
    }
    if (mkdir(r->path, mode) != 0) {
        if (errno == EEXIST && r->flag && is_dir(r->path))
            return; /* already there: fine with parents, as mkdir -p */
        fail(r, "mkdir");
        return;
    }
    /* an explicit mode is applied exactly, not filtered by the umask */
    if (r->mode >= 0 && chmod(r->path, mode) != 0)
        fail(r, "chmod");
}

static void do_remove(fs_req *r)
{
    if (unlink(r->path) == 0)
        return;
    if (errno == EISDIR || errno == EPERM) {
        int saved = errno;
        if (is_dir(r->path)) {
            if (rmdir(r->path) != 0)
                fail(r, "rmdir");
            return;
        }
        errno = saved;
    }
    fail(r, "remove");
}

static void do_rename(fs_req *r)
{
    if (rename(r->path, r->path2) != 0)
        fail(r, "rename");
}

static void do_readlink(fs_req *r)
{
    /* st_size of a link is its target's length, except in /proc, where it is 0 or a guess:
     * grow the buffer until the target fits. */
    size_t size = 256;
    for (;;) {
        char *buf = malloc(size);
        if (buf == NULL) {
            errno = ENOMEM;
            fail(r, "readlink");
            return;
        }
        ssize_t n = readlink(r->path, buf, size);
        if (n < 0) {
            free(buf);
            fail(r, "readlink");
            return;
        }
        if ((size_t)n < size) {
            r->output = buf;
            r->output_len = (size_t)n;
            return;
        }
        free(buf);
        if (size >= (size_t)1 << 20) {
            errno = ENAMETOOLONG;
            fail(r, "readlink");
            return;
        }
        size *= 4;
    }
}

/* ---- the threadpool ends ---- */

static void work_cb(uv_work_t *work)
{
    fs_req *r = work->data;
    errno = 0;
    switch (r->op) {
    case OP_READ: do_read(r); break;
    case OP_WRITE:
        if (r->flag && !r->append)
            do_write_atomic(r);
        else
            do_write_plain(r);
        break;
    case OP_STAT: do_stat(r); break;
    case OP_LIST: do_list(r); break;
    case OP_MKDIR: do_mkdir(r); break;
    case OP_REMOVE: do_remove(r); break;
    case OP_RENAME: do_rename(r); break;
    case OP_READLINK: do_readlink(r); break;
    }
}

static void set_number(lua_State *L, const char *field, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, field);
}

static void set_integer(lua_State *L, const char *field, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, field);
}

static double seconds_of(struct timespec ts)
{
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void push_stat(lua_State *L, const struct stat *st)
{
    lua_createtable(L, 0, 11);
    lua_pushstring(L, type_name_of_mode(st->st_mode));
    lua_setfield(L, -2, "type");
    set_integer(L, "size", (lua_Integer)st->st_size);
    set_integer(L, "mode", (lua_Integer)(st->st_mode & 07777));
    set_integer(L, "uid", (lua_Integer)st->st_uid);
    set_integer(L, "gid", (lua_Integer)st->st_gid);
    set_number(L, "mtime", seconds_of(st->st_mtim));
    set_number(L, "ctime", seconds_of(st->st_ctim));
    set_number(L, "atime", seconds_of(st->st_atim));
    set_integer(L, "ino", (lua_Integer)st->st_ino);
    set_integer(L, "dev", (lua_Integer)st->st_dev);
    set_integer(L, "nlink", (lua_Integer)st->st_nlink);
}

/* Pushes the callback's arguments; returns how many. */
static int push_outcome(lua_State *L, fs_req *r)
{
    if (r->too_big) {
        /* sacm_fail formats with lua_pushfstring, which has no 64-bit conversion of its own */
        char limit[32];
        snprintf(limit, sizeof limit, "%zu", r->max_bytes);
        return sacm_fail(L, "EFBIG", "read %s: file is larger than max_bytes (%s)", r->path, limit);
    }
    if (r->err != 0) {
        if (r->op == OP_RENAME)
            lua_pushfstring(L, "%s %s to %s", r->what, r->path, r->path2);
        else
            lua_pushfstring(L, "%s %s", r->what, r->path);
        sacm_fail_uv(L, -r->err, lua_tostring(L, -1));
        lua_remove(L, -3); /* the context string */
        return 2;
    }
    switch (r->op) {
    case OP_READ:
    case OP_READLINK:
        lua_pushlstring(L, r->output ? r->output : "", r->output_len);
        return 1;
    case OP_STAT:
        push_stat(L, &r->st);
        return 1;
    case OP_LIST:
        lua_createtable(L, (int)r->n_entries, 0);
        for (size_t i = 0; i < r->n_entries; i++) {
            lua_createtable(L, 0, 2);
            lua_pushstring(L, r->entries[i].name);
            lua_setfield(L, -2, "name");
            lua_pushstring(L, type_name_of_dt(r->entries[i].type));
            lua_setfield(L, -2, "type");
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return 1;
    default:
        lua_pushboolean(L, 1);
        return 1;
    }
}

static void after_work_cb(uv_work_t *work, int status)
{
    fs_req *r = work->data;
    /* The runtime is ending: the Lua state is gone or going, so only free. */
    if (sacm_state_closing()) {
        req_free(r);
        return;
    }
    lua_State *L = sacm_main_state();
    int cb_ref = r->cb_ref;
    lua_rawgeti(L, LUA_REGISTRYINDEX, cb_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, cb_ref);
    int nargs;
    if (status < 0)
        nargs = sacm_fail_uv(L, status, "file operation");
    else
        nargs = push_outcome(L, r);
    req_free(r);
    sacm_invoke(L, nargs);
}

/* ---- the Lua side of each operation ---- */

static char *check_path(lua_State *L, int idx)
{
    size_t len;
    const char *s = luaL_checklstring(L, idx, &len);
    if (strlen(s) != len)
        luaL_argerror(L, idx, "path contains a NUL byte");
    if (len == 0)
        luaL_argerror(L, idx, "path is empty");
    return (char *)s;
}

static int check_mode(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return -1;
    lua_Integer m = luaL_checkinteger(L, idx);
    luaL_argcheck(L, m >= 0 && m <= 07777, idx, "mode must be permission bits (0 to 0o7777)");
    return (int)m;
}

/* Everything that can raise happens before this: it copies the checked arguments, takes the
 * callback (the last argument) and queues the work. */
static int submit(lua_State *L, fs_req *proto, int cb_idx, const char *path, const char *path2,
                  const char *input, size_t input_len)
{
    luaL_checktype(L, cb_idx, LUA_TFUNCTION);
    fs_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return luaL_error(L, "out of memory");
    *r = *proto;
    r->path = strdup(path);
    r->path2 = path2 ? strdup(path2) : NULL;
    r->input = input ? malloc(input_len ? input_len : 1) : NULL;
    if (r->path == NULL || (path2 && r->path2 == NULL) || (input && r->input == NULL)) {
        req_free(r);
        return luaL_error(L, "out of memory");
    }
    if (input) {
        memcpy(r->input, input, input_len);
        r->input_len = input_len;
    }
    r->work.data = r;
    int rc = uv_queue_work(sacm_loop(), &r->work, work_cb, after_work_cb);
    if (rc < 0) {
        req_free(r);
        return luaL_error(L, "uv_queue_work: %s", uv_strerror(rc));
    }
    lua_pushvalue(L, cb_idx);
    r->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* read(path, max_bytes, cb) */
static int l_read(lua_State *L)
{
    const char *path = check_path(L, 1);
    lua_Integer max = luaL_checkinteger(L, 2);
    luaL_argcheck(L, max >= 0, 2, "max_bytes must not be negative");
    fs_req proto = {.op = OP_READ, .max_bytes = (size_t)max, .mode = -1};
    return submit(L, &proto, 3, path, NULL, NULL, 0);
}

/* write(path, data, mode, atomic, append, cb) */
static int l_write(lua_State *L)
{
    const char *path = check_path(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    fs_req proto = {
        .op = OP_WRITE,
        .mode = check_mode(L, 3),
        .flag = lua_toboolean(L, 4),
        .append = lua_toboolean(L, 5),
    };
    return submit(L, &proto, 6, path, NULL, data, len);
}

/* stat(path, follow_links, cb) */
static int l_stat(lua_State *L)
{
    const char *path = check_path(L, 1);
    fs_req proto = {.op = OP_STAT, .mode = -1, .flag = lua_toboolean(L, 2)};
    return submit(L, &proto, 3, path, NULL, NULL, 0);
}

/* list(path, cb) */
static int l_list(lua_State *L)
{
    const char *path = check_path(L, 1);
    fs_req proto = {.op = OP_LIST, .mode = -1};
    return submit(L, &proto, 2, path, NULL, NULL, 0);
}

/* mkdir(path, mode, parents, cb) */
static int l_mkdir(lua_State *L)
{
    const char *path = check_path(L, 1);
    fs_req proto = {.op = OP_MKDIR, .mode = check_mode(L, 2), .flag = lua_toboolean(L, 3)};
    return submit(L, &proto, 4, path, NULL, NULL, 0);
}

/* remove(path, cb) */
static int l_remove(lua_State *L)
{
    const char *path = check_path(L, 1);
    fs_req proto = {.op = OP_REMOVE, .mode = -1};
    return submit(L, &proto, 2, path, NULL, NULL, 0);
}

/* rename(from, to, cb) */
static int l_rename(lua_State *L)
{
    const char *from = check_path(L, 1);
    const char *to = check_path(L, 2);
    fs_req proto = {.op = OP_RENAME, .mode = -1};
    return submit(L, &proto, 3, from, to, NULL, 0);
}

/* readlink(path, cb) */
static int l_readlink(lua_State *L)
{
    const char *path = check_path(L, 1);
    fs_req proto = {.op = OP_READLINK, .mode = -1};
    return submit(L, &proto, 2, path, NULL, NULL, 0);
}

int luaopen_sacm__fs(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"read", l_read},
        {"write", l_write},
        {"stat", l_stat},
        {"list", l_list},
        {"mkdir", l_mkdir},
        {"remove", l_remove},
        {"rename", l_rename},
        {"readlink", l_readlink},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
