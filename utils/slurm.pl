#!/usr/bin/env perl
# Run Kaldi-style parallel jobs on a Slurm cluster, as one job array, and wait for them.
#
#   utils/slurm.pl [--config conf/slurm.conf] [--max-jobs-run N] [--mem 4G] \
#                  [--num-threads N] [--gpu N] [--time 4:00:00] [JOB=1:N] LOGFILE COMMAND...
#
# Same interface, JOB substitution, quoting, logs and exit status as utils/run.pl.
# It writes LOGDIR/q/NAME.sh (NAME: the log's file name without JOB), submits it once
# with `sbatch --parsable --array=first-last[%N] --job-name=NAME --output=LOGDIR/q/NAME.%a.out`,
# and waits. Each array task runs its command into its own log (with Kaldi's header and
# footer) and then writes its exit code to a status file in LOGDIR/q/; those files, not
# the scheduler's accounting, decide success, so nothing depends on sacct being
# configured. A task that leaves the queue without a status file (scancel, node
# failure, out-of-memory kill of the job script) counts as failed, naming its logs,
# once PYSPK_QUEUE_GRACE seconds (default 60: NFS caches file attributes) have passed.
#
# Options map onto sbatch arguments through a Kaldi-style config (--config, else
# conf/slurm.conf in the current directory, else the built-in one below):
#   command sbatch --export=PATH     the submit command and its fixed arguments
#   option mem=* --mem=$0            --mem 4G -> --mem=4G ($0 is the value)
#   option gpu=0                     an exact value may map to nothing
#   default gpu=0                    the value used when the option is not given
# An option given on the command line but not described in the config is an error.
# --max-jobs-run N becomes the array's throttle (--array=1-40%N).
# The job script sets PATH, PYTHONPATH, VIRTUAL_ENV, LC_ALL, ... to their values here,
# so `--export=PATH` (Kaldi's choice: no login-node variables such as
# CUDA_VISIBLE_DEVICES leak into jobs) still runs the project's python.
# INT/TERM/HUP to slurm.pl cancel the job array (scancel; also when they come during the
# submission) and wait until squeue no longer lists it -- its tasks' processes have been
# killed -- before slurm.pl exits, so that the stage lock held by its caller outlives
# every task (at most PYSPK_CANCEL_WAIT seconds, default 300, then a warning).
use strict;
use warnings;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use lib dirname(abs_path(__FILE__)) . "/lib";
use QueueCommon;

my $builtin = <<'EOF';
command sbatch --export=PATH --nodes=1 --ntasks=1
option time=* --time=$0
option mem=* --mem=$0
option mem=0
option num_threads=* --cpus-per-task=$0
default gpu=0
option gpu=0
option gpu=* --gres=gpu:$0
EOF

my $p = QueueCommon::parse_args(@ARGV);
QueueCommon::submit_and_wait($p,
  builtin => $builtin,
  default_config => "conf/slurm.conf",
  task_var => "SLURM_ARRAY_TASK_ID",
  array_args => sub {
    my ($first, $last, $max_jobs, $name, $qdir) = @_;
    return ("--parsable", "--array=$first-$last" . ($max_jobs ? "%$max_jobs" : ""),
            "--job-name=$name", "--output=$qdir/$name.%a.out");
  },
  # --parsable prints "jobid" or "jobid;cluster".
  parse_id => sub { $_[0] =~ /^\s*(\d+)/ ? $1 : undef },
  # squeue lists a job while any of its tasks is pending or running; a finished job
  # prints nothing, or "Invalid job id" once slurmctld has purged it (MinJobAge).
  alive => sub {
    my ($out, $rc) = QueueCommon::capture("squeue", "-h", "-j", $_[0], "-o", "%i");
    return $out =~ /\S/ ? 1 : 0 if $rc == 0;
    return $out =~ /Invalid job id/i ? 0 : undef;
  },
  cancel => sub { ["scancel", $_[0]] },
);
