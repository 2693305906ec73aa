/* runstat: runs a command N times and prints one line of key=value pairs about it.
 *
 *   runstat [-n RUNS] [-w WARMUP] [--] command [args...] [--- command [args...]]...
 *
 * Each run is fork + execvp + wait4, with stdin, stdout and stderr on /dev/null. Wall time is
 * taken with CLOCK_MONOTONIC just before fork and just after wait4 returns, so it includes the
 * cost of starting a process, as a person typing the command would see it. Peak RSS is the
 * largest ru_maxrss that wait4 reported for a measured run (KiB on Linux). WARMUP runs happen
 * first and are not counted. Any run that exits non-zero or dies by a signal stops runstat
 * with a message on stderr and exit status 1; bad usage exits 2.
 *
 * Several commands, separated by `---`, are run in turn, one run of each, then again: A B A B
 * ... So whatever else the machine does in the meantime lands on all of them alike, which makes
 * their ratio trustworthy on a busy machine.
 *
 * Output, one line per command on stdout, in the order given:
 *   cmd=1 runs=200 warmup=5 wall_min_ms=0.812 wall_median_ms=0.861 wall_mean_ms=0.874
 *   wall_max_ms=1.410 cpu_mean_ms=0.702 maxrss_kib=2816 floor_kib=1104
 * cpu_mean_ms is user + system time of the child. floor_kib is runstat's own peak RSS when the
 * measured runs began: Linux folds the RSS of the forked copy of runstat into the child's
 * ru_maxrss, so a maxrss_kib near floor_kib says little about the command itself. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 2
#define SEPARATOR "---"

/* One command and what its measured runs gave. */
struct command {
    char **argv; /* NULL-terminated, inside runstat's own argv */
    double *walls;
    double wall_sum, cpu_sum;
    long max_rss;
};

static void usage(void)
{
    fprintf(stderr, "usage: runstat [-n RUNS] [-w WARMUP] [--] command [args...] [--- command [args...]]...\n"
                    "  -n RUNS    measured runs of each command (default 10)\n"
                    "  -w WARMUP  runs of each before measuring, not counted (default 1)\n"
                    "  ---        between commands: they run in turn, one run each, A B A B ...\n");
    exit(EXIT_USAGE);
}

static long parse_count(const char *opt, const char *text, long min)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > 1000000) {
        fprintf(stderr, "runstat: %s needs a whole number from %ld to 1000000, not '%s'\n", opt, min, text);
        exit(EXIT_USAGE);
    }
    return v;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double tv_ms(struct timeval tv)
{
    return (double)tv.tv_sec * 1e3 + (double)tv.tv_usec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One run of argv. Fills wall time (ms), CPU time (ms) and ru_maxrss (KiB); returns 0, or
 * prints why the run failed and returns -1. */
static int run_once(char **argv, int devnull, double *wall, double *cpu, long *maxrss)
{
    struct rusage ru;
    int status;
    double start = now_ms();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "runstat: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
        dup2(devnull, STDERR_FILENO);
        execvp(argv[0], argv);
        _exit(127); /* stderr is /dev/null now; the parent explains 127 */
    }
    pid_t got;
    do {
        got = wait4(pid, &status, 0, &ru);
    } while (got < 0 && errno == EINTR);
    double end = now_ms();
    if (got < 0) {
        fprintf(stderr, "runstat: wait4: %s\n", strerror(errno));
        return -1;
    }
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "runstat: '%s' was killed by signal %d (%s)\n", argv[0], WTERMSIG(status),
                strsignal(WTERMSIG(status)));
        return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        fprintf(stderr, "runstat: '%s' exited with status %d%s\n", argv[0], code,
                code == 127 ? " (not found or not executable?)" : "");
        return -1;
    }
    *wall = end - start;
    *cpu = tv_ms(ru.ru_utime) + tv_ms(ru.ru_stime);
    *maxrss = ru.ru_maxrss;
    return 0;
}

int main(int argc, char **argv)
{
    long runs = 10, warmup = 1;
    int i;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-')
            break;
        if ((strcmp(a, "-n") == 0 || strcmp(a, "-w") == 0) && i + 1 < argc) {
            if (a[1] == 'n')
                runs = parse_count("-n", argv[++i], 1);
            else
                warmup = parse_count("-w", argv[++i], 0);
            continue;
        }
        usage();
    }
    if (i >= argc)
        usage();

    /* Split what is left at each "---" into commands, in place: every separator becomes the
     * NULL that ends the command before it. argv[argc] is already NULL. */
    struct command *cmds = calloc((size_t)(argc - i), sizeof *cmds);
    int ncmds = 0;
    if (cmds == NULL) {
        fprintf(stderr, "runstat: out of memory\n");
        return EXIT_FAILURE;
    }
    for (int start = i; start <= argc; start++) {
        int end = start;
        while (end < argc && strcmp(argv[end], SEPARATOR) != 0)
            end++;
        if (end == start) {
            fprintf(stderr, "runstat: an empty command %s\n", end < argc ? "before '" SEPARATOR "'" : "at the end");
            usage();
        }
        cmds[ncmds].argv = argv + start;
        cmds[ncmds].walls = malloc((size_t)runs * sizeof *cmds[ncmds].walls);
        if (cmds[ncmds].walls == NULL) {
            fprintf(stderr, "runstat: out of memory\n");
            return EXIT_FAILURE;
        }
        ncmds++;
        argv[end] = NULL;
        start = end;
    }

    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0) {
        fprintf(stderr, "runstat: /dev/null: %s\n", strerror(errno));
        return EXIT_FAILURE;
    }

    double wall, cpu;
    long rss;
    for (long r = 0; r < warmup; r++) {
        for (int c = 0; c < ncmds; c++) {
            if (run_once(cmds[c].argv, devnull, &wall, &cpu, &rss) < 0) {
                fprintf(stderr, "runstat: failed in warm-up run %ld of %ld\n", r + 1, warmup);
                return EXIT_FAILURE;
            }
        }
    }
    struct rusage self;
    getrusage(RUSAGE_SELF, &self);
    for (long r = 0; r < runs; r++) {
        for (int c = 0; c < ncmds; c++) {
            struct command *cmd = &cmds[c];
            if (run_once(cmd->argv, devnull, &wall, &cpu, &rss) < 0) {
                fprintf(stderr, "runstat: failed in run %ld of %ld\n", r + 1, runs);
                return EXIT_FAILURE;
            }
            cmd->walls[r] = wall;
            cmd->wall_sum += wall;
            cmd->cpu_sum += cpu;
            if (rss > cmd->max_rss)
                cmd->max_rss = rss;
        }
    }

    for (int c = 0; c < ncmds; c++) {
        struct command *cmd = &cmds[c];
        double *w = cmd->walls;
        qsort(w, (size_t)runs, sizeof *w, cmp_double);
        double median = runs % 2 ? w[runs / 2] : (w[runs / 2 - 1] + w[runs / 2]) / 2;
        printf("cmd=%d runs=%ld warmup=%ld wall_min_ms=%.3f wall_median_ms=%.3f wall_mean_ms=%.3f "
               "wall_max_ms=%.3f cpu_mean_ms=%.3f maxrss_kib=%ld floor_kib=%ld\n",
               c + 1, runs, warmup, w[0], median, cmd->wall_sum / (double)runs, w[runs - 1],
               cmd->cpu_sum / (double)runs, cmd->max_rss, self.ru_maxrss);
        free(w);
    }
    free(cmds);
    return EXIT_SUCCESS;
}
