package QueueCommon;
# Shared by utils/run.pl, utils/slurm.pl and utils/queue.pl (Kaldi's queue-script
# convention): argument parsing, JOB substitution, shell quoting, the log header and
# footer, the failure report, the Kaldi-style option config (slurm.conf, queue.conf),
# the generated batch script and the wait on its status files.
# Only modules of perl-base are used, so the scripts run on a bare Debian.
use strict;
use warnings;
use File::Basename qw(dirname basename);
use File::Path qw(make_path);
use Cwd qw(getcwd);
use POSIX ();

our $PROG = basename($0);

sub die_usage { print STDERR "$PROG: $_[0]\n"; exit 1; }

# Parse `[--name value | --name=value]... [NAME=a:b | NAME=a] LOGFILE COMMAND...`.
# Option names have dashes turned into underscores (--max-jobs-run -> max_jobs_run).
sub parse_args {
  my @args = @_;
  if (!@args || $args[0] eq "--help" || $args[0] eq "-h") {    # the script's header comment
    open(my $fh, "<", $0) or die_usage("usage: $PROG [options] [JOB=1:N] LOGFILE COMMAND...");
    <$fh>;
    while (my $line = <$fh>) { last unless $line =~ s/^# ?//; print STDERR $line; }
    exit(@args ? 0 : 1);
  }
  my %opt;
  while (@args && $args[0] =~ /^--/) {
    my $arg = shift @args;
    my ($name, $value);
    if ($arg =~ /^--([^=]+)=(.*)$/) { ($name, $value) = ($1, $2); }
    else {
      $name = substr($arg, 2);
      die_usage("option $arg needs a value") unless @args;
      $value = shift @args;
    }
    $name =~ s/-/_/g;
    $opt{$name} = $value;
  }
  for my $k (qw(max_jobs_run num_threads)) {
    die_usage("--" . ($k =~ s/_/-/gr) . " needs a positive integer, got '$opt{$k}'")
      if defined $opt{$k} && $opt{$k} !~ /^[1-9]\d*$/;
  }
  my ($jobname, $first, $last) = ("", 1, 1);
  if (@args && $args[0] =~ /^([A-Za-z_]\w*)=(\d+)(?::(\d+))?$/) {
    ($jobname, $first, $last) = ($1, $2, defined $3 ? $3 : $2);
    shift @args;
    die_usage("bad job range $jobname=$first:$last (first > last)") if $first > $last;
  } elsif (@args && $args[0] =~ /^[A-Za-z_]\w*=[\d:,-]+$/) {
    die_usage("bad job range '$args[0]' (expected NAME=first:last, e.g. JOB=1:4)");
  }
  die_usage("usage: $PROG [options] [JOB=1:N] LOGFILE COMMAND...") if @args < 2;
  my $logfile = shift @args;
  die_usage("log file '$logfile' must contain '$jobname' (" . ($last - $first + 1) . " jobs, one log each)")
    if $last > $first && index($logfile, $jobname) < 0;
  return { opt => \%opt, jobname => $jobname, first => $first, last => $last,
           logfile => $logfile, cmd => shell_join(@args) };
}

# Each word of COMMAND stays one word for bash, whatever it holds: a word made only of
# characters no shell treats specially (letters, digits and _ - + = : , . / @ %) goes as it
# is, any other word is single-quoted, so `$(...)`, backticks, `;`, `&`, globs, quotes and
# whitespace in a path are never run or split. Two Kaldi conventions are kept:
# - a word that is exactly a pipe or redirection operator (%OPERATORS below: `|`, `>`,
#   `>>`, `<`, `2>`, `2>>`, `2>&1`, `&>`, `|&`, `&&`, `||`, `;`) reaches bash as that
#   operator, so `run.pl log a \| b \> out` pipes and redirects (glued forms such as
#   `2>/dev/null` or `>out` are one ordinary word, passed literally);
# - a COMMAND given as one word is a shell command line of its own ("a | b").
our %OPERATORS = map { $_ => 1 } ("|", "|&", "||", "&&", ";", "<", ">", ">>", "2>", "2>>", "2>&1", "&>");

sub shell_join {
  return $_[0] if @_ == 1;
  return join(" ", map { $OPERATORS{$_} ? $_ : /^[A-Za-z0-9_\-+=:,.\/@%]+$/ ? $_ : quote($_) } @_);
}

sub quote { my $s = shift; $s =~ s/'/'\\''/g; return "'$s'"; }

# Every occurrence of the job name is replaced, as Kaldi does (feats.JOB.ark -> feats.3.ark).
sub subst {
  my ($s, $name, $id) = @_;
  return $s if $name eq "";
  $s =~ s/\Q$name\E/$id/g;
  return $s;
}

sub now { return scalar localtime(); }

sub write_header {
  my ($log, $cmd) = @_;
  make_path(dirname($log));
  open(my $fh, ">", $log) or die_usage("cannot write log file $log: $!");
  (my $shown = $cmd) =~ s/\n/\n# /g;    # a newline inside a quoted word keeps the header a header
  print $fh "# $shown\n# Started at " . now() . "\n#\n";
  close($fh);
}

sub write_footer {
  my ($log, $code, $elapsed, $threads) = @_;
  open(my $fh, ">>", $log) or die_usage("cannot append to log file $log: $!");
  print $fh "# Accounting: time=$elapsed threads=$threads\n";
  print $fh "# Ended (code $code) at " . now() . ", elapsed time $elapsed seconds\n";
  close($fh);
}

# "run.pl: 1 / 4 failed, log is in /tmp/x/log.3"; exits 1 when anything failed.
sub report_and_exit {
  my ($njobs, @failed) = @_;
  exit 0 unless @failed;
  my $n = scalar @failed;
  if ($n == 1) { print STDERR "$PROG: $n / $njobs failed, log is in $failed[0]\n"; }
  else { print STDERR "$PROG: $n / $njobs failed, logs are in " . join(" ", @failed) . "\n"; }
  exit 1;
}

# ---- Kaldi-style option config: `command ...`, `option NAME=VALUE args`,
# `option NAME=* args with $0`, `default NAME=VALUE`; '#' starts a comment.
sub read_config {
  my ($file, $builtin) = @_;
  my (@lines, $where);
  if (defined $file) {
    open(my $fh, "<", $file) or die_usage("cannot read config $file: $!");
    @lines = <$fh>; close($fh); $where = $file;
  } else { @lines = split(/\n/, $builtin); $where = "$PROG (built-in config)"; }
  my %c = (command => undef, exact => {}, wild => {}, default => {}, names => {}, file => $where);
  my $n = 0;
  for my $line (@lines) {
    $n++;
    $line =~ s/#.*//; $line =~ s/^\s+|\s+$//g;
    next if $line eq "";
    if ($line =~ /^command\s+(.+)$/) { $c{command} = $1; }
    elsif ($line =~ /^option\s+(\w+)=(\S+)\s*(.*)$/) {
      $c{names}{$1} = 1;
      if ($2 eq "*") { $c{wild}{$1} = $3; } else { $c{exact}{"$1=$2"} = $3; }
    } elsif ($line =~ /^default\s+(\w+)=(\S+)$/) { $c{default}{$1} = $2; $c{names}{$1} = 1; }
    else { die_usage("$where:$n: cannot parse '$line' (expected 'command ...', 'option NAME=VALUE ...' or 'default NAME=VALUE')"); }
  }
  die_usage("$where: no 'command' line") unless defined $c{command};
  return \%c;
}

# The submit command and its arguments for the given options (command line over defaults).
sub submit_args {
  my ($c, $opt) = @_;
  my %eff = (%{$c->{default}}, %$opt);
  my $args = $c->{command};
  for my $name (sort keys %eff) {
    my $v = $eff{$name};
    if (exists $c->{exact}{"$name=$v"}) { $args .= " " . $c->{exact}{"$name=$v"}; }
    elsif (exists $c->{wild}{$name}) { (my $arg = $c->{wild}{$name}) =~ s/\$0/$v/g; $args .= " $arg"; }
    else {
      my $known = join(", ", map { "--" . s/_/-/gr } sort keys %{$c->{names}});
      die_usage("option --" . ($name =~ s/_/-/gr) . " $v is not described in $c->{file} (options there: $known)");
    }
  }
  return split(" ", $args);
}

# The log file of each job, the job script in LOGDIR/q/ and its status-file stem.
sub batch_paths {
  my ($p) = @_;
  my $dir = dirname($p->{logfile});
  my $base = basename($p->{logfile});
  $base = subst($base, $p->{jobname}, "") if $p->{jobname} ne "";
  $base =~ s/\.\.+/./g; $base =~ s/^\.|\.$//g; $base = "job" if $base eq "";
  my $qdir = "$dir/q";
  make_path($qdir);
  return ($qdir, $base, "$qdir/$base.sh", "$qdir/done.$base.$$");
}

# A bash script that runs task $task_var's command into its log, writes the Kaldi
# header and footer, and last (atomically) a status file holding the exit code.
sub write_batch_script {
  my ($p, $script, $status_stem, $task_var, $threads, @env_names) = @_;
  open(my $fh, ">", $script) or die_usage("cannot write $script: $!");
  print $fh "#!/bin/bash\n# written by $PROG at " . now() . "\n";
  print $fh "cd " . quote(getcwd()) . " || exit 100\n";
  for my $e (@env_names) { print $fh "export $e=" . quote($ENV{$e}) . "\n" if defined $ENV{$e}; }
  print $fh "status=" . quote($status_stem) . "\n";
  print $fh "task=\${$task_var:?'not run as an array task'}\ncase \$task in\n";
  for my $id ($p->{first} .. $p->{last}) {
    my $cmd = subst($p->{cmd}, $p->{jobname}, $id);
    my $log = subst($p->{logfile}, $p->{jobname}, $id);
    print $fh "  $id) log=" . quote($log) . "; cmd=" . quote($cmd) . " ;;\n";
  }
  print $fh "  *) echo \"$PROG: no task \$task in this script\" >&2; exit 100 ;;\nesac\n";
  print $fh <<"EOF";
mkdir -p "\$(dirname "\$log")"
{ printf '# %s\\n' "\${cmd//\$'\\n'/\$'\\n'# }"; echo "# Started at \$(date) on \$(hostname)"; echo '#'; } > "\$log"
t0=\$(date +%s)
bash -o pipefail -c "\$cmd" >> "\$log" 2>&1 < /dev/null
rc=\$?
t=\$((\$(date +%s) - t0))
echo "# Accounting: time=\$t threads=$threads" >> "\$log"
echo "# Ended (code \$rc) at \$(date), elapsed time \$t seconds" >> "\$log"
echo \$rc > "\$status.\$task.tmp" && mv "\$status.\$task.tmp" "\$status.\$task"
exit \$rc
EOF
  close($fh);
  chmod(0755, $script);
}

# Wait until every task has written its status file. $alive->() returns 1 while the
# scheduler still knows the job, 0 once it is gone, undef when it cannot tell; a task
# with no status file $grace s (60, or env PYSPK_QUEUE_GRACE) after its job left the
# scheduler is failed (killed, node lost): the wait covers NFS attribute caching, and
# the directory is re-read meanwhile; the scheduler is asked at most every 10 s;
# $outfile->($id) names the scheduler's own output file of task $id for that message.
# Returns the list of failed log files.
sub wait_for_status {
  my ($p, $status_stem, $alive, $outfile) = @_;
  my %pending = map { $_ => 1 } ($p->{first} .. $p->{last});
  my (%failed, $gone_since);
  my ($sleep, $last_check) = (0.1, time());
  my $grace = defined $ENV{PYSPK_QUEUE_GRACE} ? $ENV{PYSPK_QUEUE_GRACE} : 60;
  die_usage("PYSPK_QUEUE_GRACE must be a whole number of seconds, got '$grace'") unless $grace =~ /^\d+$/;
  my $every = $grace < 10 ? $grace : 10;
  while (%pending) {
    if (defined $gone_since && opendir(my $dh, dirname($status_stem))) { my @x = readdir($dh); closedir($dh); }
    for my $id (sort { $a <=> $b } keys %pending) {
      my $sf = "$status_stem.$id";
      next unless -e $sf;
      open(my $fh, "<", $sf) or next;
      my $rc = <$fh>; close($fh);
      $failed{$id} = 1 unless defined $rc && $rc =~ /^0\s*$/;
      delete $pending{$id}; unlink($sf);
    }
    last unless %pending;
    if (!defined $gone_since && time() - $last_check >= $every) {
      $last_check = time();
      my $state = $alive->();
      $gone_since = time() if defined $state && !$state;
    }
    if (defined $gone_since && time() - $gone_since >= $grace) {
      for my $id (sort { $a <=> $b } keys %pending) {
        my $log = subst($p->{logfile}, $p->{jobname}, $id);
        print STDERR "$PROG: task $id left the queue without a status (killed?); see $log and " . $outfile->($id) . "\n";
        $failed{$id} = 1;
      }
      last;
    }
    select(undef, undef, undef, $sleep);
    $sleep = $sleep * 1.5 > 2 ? 2 : $sleep * 1.5;
  }
  return map { subst($p->{logfile}, $p->{jobname}, $_) } sort { $a <=> $b } keys %failed;
}

# Variables the generated job script sets to their values at submission, so that the
# job finds the same python, package and locale whatever the scheduler exports.
our @CARRY_ENV = qw(PATH PYTHONPATH LD_LIBRARY_PATH VIRTUAL_ENV PYSPK_ROOT LC_ALL LANG
                    PYTHONUNBUFFERED HOME);

# The whole of slurm.pl / queue.pl once the back-end is known. %b holds: builtin
# (config text used when there is no --config and no conf/NAME.conf), default_config,
# task_var, array_args->(first, last, max_jobs, name, qdir) (scheduler arguments),
# parse_id->(stdout of the submit command), alive->(id), cancel->(id) (a command).
sub submit_and_wait {
  my ($p, %b) = @_;
  my %opt = %{$p->{opt}};
  my $config = delete $opt{config};
  $config = $b{default_config} if !defined $config && -f $b{default_config};
  my $max_jobs = delete $opt{max_jobs_run};
  my $c = read_config($config, $b{builtin});
  my @submit = submit_args($c, \%opt);
  die_usage("$submit[0] (the 'command' of $c->{file}) is not on PATH; is this a login node of the cluster?")
    unless grep { -x "$_/$submit[0]" } split(/:/, $ENV{PATH} || ""), ($submit[0] =~ m{/} ? (".") : ());
  my $threads = $opt{num_threads} || $c->{default}{num_threads} || 1;
  my ($qdir, $base, $script, $stem) = batch_paths($p);
  unlink(map { "$stem.$_" } $p->{first} .. $p->{last});    # a stale file of a reused pid
  write_batch_script($p, $script, $stem, $b{task_var}, $threads, @CARRY_ENV);
  my @cmd = (@submit, $b{array_args}->($p->{first}, $p->{last}, $max_jobs, $base, $qdir), $script);
  # A signal during the submission is remembered and acted on once the job id is known,
  # so that no array job is left queued by a stopped stage.
  my $got;
  $SIG{$_} = sub { $got ||= $_[0]; } for qw(INT TERM HUP);
  my ($out, $id) = ("", undef);
  for my $try (1 .. 3) {    # a busy controller refuses now and then; try again
    open(my $fh, "-|", @cmd) or die_usage("cannot run $cmd[0]: $!");
    $out = join("", <$fh>);
    close($fh);
    last if $? == 0 && defined($id = $b{parse_id}->($out));
    print STDERR "$PROG: submission failed (try $try of 3): @cmd\n$out";
    die_usage("giving up; the job script is $script") if $try == 3 || $got;
    sleep(5 * $try);
  }
  my $stop = sub {
    my $sig = shift;
    $SIG{$_} = 'IGNORE' for qw(INT TERM HUP);
    system(@{$b{cancel}->($id)});
    print STDERR "$PROG: got SIG$sig; cancelled job $id; waiting for it to leave the queue\n";
    wait_gone($id, sub { $b{alive}->($id) });
    exit 1;
  };
  $stop->($got) if $got;
  $SIG{$_} = $stop for qw(INT TERM HUP);
  my @failed = wait_for_status($p, $stem, sub { $b{alive}->($id) }, sub { "$qdir/$base.$_[0].out" });
  report_and_exit($p->{last} - $p->{first} + 1, @failed);
}

# After a cancel: wait until the scheduler no longer lists job $id (Slurm lists it while
# its tasks' processes are being killed), so that the caller -- and the stage lock it
# holds -- outlives every task. Gives up after PYSPK_CANCEL_WAIT seconds (default 300),
# saying that tasks may still run, rather than hang on a scheduler that does not answer.
sub wait_gone {
  my ($id, $alive) = @_;
  my $limit = defined $ENV{PYSPK_CANCEL_WAIT} ? $ENV{PYSPK_CANCEL_WAIT} : 300;
  $limit = 300 unless $limit =~ /^\d+$/;
  my ($t0, $sleep) = (time(), 0.2);
  while (1) {
    my $state = $alive->();
    return if defined $state && !$state;
    if (time() - $t0 >= $limit) {
      print STDERR "$PROG: job $id is still " . (defined $state ? "listed by the scheduler" : "of unknown state")
        . " ${limit} s after the cancel; its tasks may still be running\n";
      return;
    }
    select(undef, undef, undef, $sleep);
    $sleep = $sleep * 1.5 > 2 ? 2 : $sleep * 1.5;
  }
}

# Output and exit status of a command given as a list (stderr included).
sub capture {
  my @cmd = @_;
  my $pid = open(my $fh, "-|");
  return ("", -1) unless defined $pid;
  if ($pid == 0) { open(STDERR, ">&", \*STDOUT); exec(@cmd) or POSIX::_exit(127); }
  my $out = join("", <$fh>);
  close($fh);
  return ($out, $? >> 8);
}

1;
