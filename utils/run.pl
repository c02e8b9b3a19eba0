#!/usr/bin/env perl
# Run Kaldi-style parallel jobs on this machine.
#
#   utils/run.pl [--max-jobs-run N] [--num-threads N] [--mem 4G] [--gpu N] [--config F] \
#                [JOB=1:N] LOGFILE COMMAND...
#
# Every occurrence of the job name (any NAME in NAME=first:last) in LOGFILE and COMMAND
# is replaced by the job's index. The command runs through `bash -o pipefail -c`, with
# this process's environment, stdin from /dev/null and stdout+stderr into its log, which
# starts with "# COMMAND" and ends with Kaldi's "# Accounting: time=.. threads=.." and
# "# Ended (code N) at ..." lines. Every word of COMMAND stays one word (quoted for bash
# where it holds anything but letters, digits and _-+=:,./@%), so a path holding `$(...)`,
# backticks, `;` or spaces is never run or split; a word that is exactly a pipe or
# redirection (| > >> < 2> 2>> 2>&1 &> |& && || ;) stays one, as in Kaldi:
# `run.pl JOB=1:2 log.JOB echo JOB \| tr 1 x`; a COMMAND given as one word is a command
# line of its own: `run.pl log "ls | wc -l"`.
#
# --max-jobs-run N: at most N jobs at the same time (default: all at once).
# --mem, --gpu, --config and any other --name value: accepted and ignored, so that a
#   cmd.sh line written for slurm.pl or queue.pl also works here.
# Exit status: 0 when every job succeeded; else 1, naming the failed logs on stderr
# ("run.pl: 1 / 4 failed, log is in exp/log/x.3.log").
# INT/TERM/HUP to run.pl are passed (as TERM) to every running job and every process
# below it (found in /proc), so whole pipelines stop; run.pl waits for the jobs to end
# (SIGKILL to what is left after PYSPK_STOP_GRACE seconds, default 30), writes their
# footers and exits non-zero. The jobs inherit run.pl's open descriptors, so a stage
# lock (utils/stamped.sh) passed down to run.pl is held until the last job has exited.
# Jobs stay in run.pl's process group: a signal to the group of run.sh (^C, kill --
# -PGID, even SIGKILL, which run.pl cannot pass on) reaches them directly.
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . "/lib";
use POSIX ();
use QueueCommon;

my $p = QueueCommon::parse_args(@ARGV);
my $max_jobs = $p->{opt}{max_jobs_run} || 0;
my $threads = $p->{opt}{num_threads} || 1;
my %running;    # pid -> [job id, log file, start time]
my @failed;

# The given pids and all their descendants (from the ppid field of /proc/PID/stat).
sub process_tree {
  my @todo = @_;
  my %kids;
  if (opendir(my $dh, "/proc")) {
    for my $p (grep { /^\d+$/ } readdir($dh)) {
      open(my $fh, "<", "/proc/$p/stat") or next;
      my $s = <$fh>;
      close($fh);
      push @{$kids{$1}}, $p if defined $s && $s =~ /.*\)\s+\S+\s+(\d+)/;   # comm may hold ")"
    }
    closedir($dh);
  }
  my @out;
  while (@todo) { my $x = shift @todo; push @out, $x; push @todo, @{$kids{$x} || []}; }
  return @out;
}

# INT/TERM/HUP: TERM to every running job's process tree, then wait for the jobs to end
# (the footers get their real exit codes), so that run.pl -- and the stage lock its
# caller holds -- outlives them. The trees are read again every second and a process a
# job started meanwhile gets its TERM too (each process one TERM, so a job's own
# shutdown is not interrupted); after PYSPK_STOP_GRACE seconds (default 30) what is
# left below the jobs gets SIGKILL.
sub stop_all {
  my $sig = shift;
  $SIG{$_} = 'IGNORE' for qw(INT TERM HUP);
  my $n = scalar(keys %running);
  print STDERR "$QueueCommon::PROG: got SIG$sig; stopping $n running job(s)\n";
  my $grace = defined $ENV{PYSPK_STOP_GRACE} && $ENV{PYSPK_STOP_GRACE} =~ /^\d+$/ ? $ENV{PYSPK_STOP_GRACE} : 30;
  my %termed;
  my ($t0, $swept) = (time(), 0);
  while (%running) {
    if (time() - $swept >= 1) {
      my @tree = process_tree(keys %running);
      if (time() - $t0 < $grace) {
        my @new = grep { !$termed{$_} } @tree;
        $termed{$_} = 1 for @new;
        kill('TERM', @new);
      } else { kill('KILL', @tree); }
      $swept = time();
    }
    my $pid = waitpid(-1, POSIX::WNOHANG());
    if ($pid > 0) { finish_job($pid, $?); next; }
    last if $pid < 0;
    select(undef, undef, undef, 0.05);
  }
  exit 1;
}
$SIG{$_} = \&stop_all for qw(INT TERM HUP);

# Signals are blocked from the fork until the job is in %running, so a stop never
# misses a job that has just started; the child unblocks them before exec.
my $block = POSIX::SigSet->new(POSIX::SIGINT(), POSIX::SIGTERM(), POSIX::SIGHUP());

sub start_job {
  my $id = shift;
  my $log = QueueCommon::subst($p->{logfile}, $p->{jobname}, $id);
  my $cmd = QueueCommon::subst($p->{cmd}, $p->{jobname}, $id);
  QueueCommon::write_header($log, $cmd);
  my $old = POSIX::SigSet->new();
  POSIX::sigprocmask(POSIX::SIG_BLOCK(), $block, $old);
  my $pid = fork();
  QueueCommon::die_usage("fork failed: $!") unless defined $pid;
  if ($pid == 0) {
    $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP);
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), $old);
    open(STDIN, "<", "/dev/null");
    open(STDOUT, ">>", $log) or POSIX::_exit(127);
    open(STDERR, ">&", \*STDOUT) or POSIX::_exit(127);
    exec("bash", "-o", "pipefail", "-c", $cmd) or print STDERR "cannot run bash: $!\n";
    POSIX::_exit(127);
  }
  $running{$pid} = [$id, $log, time()];
  POSIX::sigprocmask(POSIX::SIG_SETMASK(), $old);
}

sub finish_job {
  my ($pid, $status) = @_;
  return unless exists $running{$pid};
  my ($id, $log, $t0) = @{delete $running{$pid}};
  my $code = ($status & 127) ? 128 + ($status & 127) : $status >> 8;
  QueueCommon::write_footer($log, $code, time() - $t0, $threads);
  push @failed, [$id, $log] if $code != 0;
}

sub reap_one {
  my $pid = waitpid(-1, 0);
  if ($pid == -1) {    # no child left to wait for (should not happen): count the rest as failed
    push @failed, map { [$_->[0], $_->[1]] } values %running;
    %running = ();
    return;
  }
  my $status = $?;
  my $old = POSIX::SigSet->new();
  POSIX::sigprocmask(POSIX::SIG_BLOCK(), $block, $old);    # a stop sees the job either running or finished
  finish_job($pid, $status);
  POSIX::sigprocmask(POSIX::SIG_SETMASK(), $old);
}

for my $id ($p->{first} .. $p->{last}) {
  reap_one() while $max_jobs && keys(%running) >= $max_jobs;
  start_job($id);
}
reap_one() while %running;
QueueCommon::report_and_exit($p->{last} - $p->{first} + 1,
  map { $_->[1] } sort { $a->[0] <=> $b->[0] } @failed);
