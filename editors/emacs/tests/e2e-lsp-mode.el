;;; e2e-lsp-mode.el --- Drive lsp-mode against `starchat lsp' in `emacs --batch'  -*- lexical-binding: t -*-

;; Run by tests/editors/test_emacs.py, which asserts on the JSON this writes.
;; Environment: STARCHAT_TEST_SNIPPET (editors/emacs/starchat-lsp-mode.el),
;; STARCHAT_TEST_FILE, STARCHAT_TEST_FIX_FILE, STARCHAT_TEST_OUT, STARCHAT_TEST_MAX_TOKENS,
;; STARCHAT_TEST_WAIT, STARCHAT_TEST_HOME (lsp-mode's session file goes there).
;; lsp-mode's own defaults stay: `lsp-response-timeout' 10 s.

;;; Code:

(require 'cl-lib)
(require 'json)
(dolist (dir (file-expand-wildcards "/usr/share/emacs/site-lisp/elpa/*"))
  (add-to-list 'load-path dir))

(defvar e2e-results nil)
(defvar e2e-patience (string-to-number (or (getenv "STARCHAT_TEST_WAIT") "300")))
(defvar e2e-answers nil "Answers of workspace/executeCommand, newest first.")

(defun e2e-record (name result)
  (setf (alist-get name e2e-results nil nil #'equal) result)
  (with-temp-file (getenv "STARCHAT_TEST_OUT") (insert (json-encode e2e-results))))

(defun e2e-wait (predicate seconds)
  (let ((deadline (+ (float-time) seconds)) value)
    (while (and (not (setq value (funcall predicate))) (< (float-time) deadline))
      (accept-process-output nil 0.05))
    value))

(defmacro e2e-scenario (name &rest body)
  (declare (indent 1))
  `(e2e-record ,name
               (condition-case err
                   (append '((ok . t)) (progn ,@body))
                 (error `((ok . :json-false) (error . ,(error-message-string err)))))))

(defun e2e-messages () (with-current-buffer (messages-buffer) (buffer-string)))

;; Keep lsp-mode out of the user's files and from asking questions.
(setq lsp-session-file (expand-file-name "lsp-session" (getenv "STARCHAT_TEST_HOME"))
      lsp-server-install-dir (expand-file-name "lsp-servers" (getenv "STARCHAT_TEST_HOME"))
      lsp-auto-guess-root t
      lsp-restart 'ignore
      lsp-enable-file-watchers nil
      lsp-keep-workspace-alive nil
      lsp-modeline-code-actions-enable nil
      lsp-headerline-breadcrumb-enable nil
      lsp-modeline-workspace-status-enable nil
      lsp-modeline-diagnostics-enable nil
      lsp-lens-enable nil
      lsp-diagnostics-provider :none
      lsp-completion-provider :none
      lsp-enable-symbol-highlighting nil)
(setq starchat-initialization-options
      `(:starchat (:generation (:max_new_tokens
                                ,(string-to-number (getenv "STARCHAT_TEST_MAX_TOKENS"))))))
(load (getenv "STARCHAT_TEST_SNIPPET") nil t)
(advice-add 'lsp-workspace-command-execute :filter-return
            (lambda (answer) (push answer e2e-answers) answer))
;; Only StarChat: no other Python server is installed here anyway.
(setq lsp-enabled-clients '(starchat))

(defun e2e-select-lines (first last)
  (transient-mark-mode 1)
  (goto-char (point-min))
  (forward-line (1- first))
  (set-mark (point))
  (forward-line (- last first))
  (end-of-line)
  (activate-mark))

(defun e2e-run-action (title)
  "Run the code action TITLE on the active region as lsp-mode's menu does; (SECONDS . ERROR)."
  (let* ((actions (lsp-code-actions-at-point))
         (action (cl-find title actions :key (lambda (a) (gethash "title" a)) :test #'equal))
         (started (float-time))
         error)
    (unless action (error "No action %S" title))
    (condition-case err
        (lsp-execute-code-action action)
      (error (setq error (error-message-string err))))
    (cons (- (float-time) started) error)))

(defun e2e-answer-value (answer key)
  (if (hash-table-p answer) (gethash key answer) (plist-get answer (intern (concat ":" key)))))

(defvar e2e-source (find-file-noselect (getenv "STARCHAT_TEST_FILE")))
(defvar e2e-fix (find-file-noselect (getenv "STARCHAT_TEST_FIX_FILE")))

(e2e-scenario "attach"
  (with-current-buffer e2e-source
    (lsp)
    (unless (e2e-wait (lambda () (cl-some (lambda (w) (eq (lsp--workspace-status w) 'initialized))
                                          (lsp-workspaces)))
                      120)
      (error "lsp-mode did not connect"))
    (with-current-buffer e2e-fix (lsp))
    `((servers . ,(vconcat (mapcar (lambda (w) (symbol-name (lsp--workspace-server-id w)))
                                   (lsp-workspaces)))))))

(e2e-scenario "actions"
  (with-current-buffer e2e-source
    (e2e-select-lines 4 6)
    `((titles . ,(vconcat (mapcar (lambda (a) (gethash "title" a))
                                  (lsp-code-actions-at-point)))))))

(e2e-scenario "fix"
  (with-current-buffer e2e-fix
    (e2e-wait (lambda () (lsp-workspaces)) 60)
    (let* ((before (buffer-string))
           (_ (e2e-select-lines 1 2))
           (call (e2e-run-action "StarChat: Fix selection"))
           (answer (car e2e-answers))
           (changed (e2e-wait (lambda () (not (equal (buffer-string) before))) e2e-patience)))
      `((call_seconds . ,(car call))
        (call_error . ,(cdr call))
        (timeout . ,lsp-response-timeout)
        (state . ,(e2e-answer-value answer "state"))
        (conversation . ,(e2e-answer-value answer "conversationId"))
        (changed . ,(if changed t :json-false))
        (after . ,(buffer-string))))))

(e2e-scenario "explain"
  (with-current-buffer e2e-source
    (let* ((messages-before (length (e2e-messages)))
           (_ (e2e-select-lines 4 6))
           (call (e2e-run-action "StarChat: Explain selection"))
           (answer (car e2e-answers)))
      (e2e-wait (lambda () (string-search "StarChat: Explain selection (also in"
                                          (substring (e2e-messages) messages-before)))
                e2e-patience)
      `((call_seconds . ,(car call))
        (call_error . ,(cdr call))
        (state . ,(e2e-answer-value answer "state"))
        (conversation . ,(e2e-answer-value answer "conversationId"))
        (messages . ,(substring (e2e-messages) messages-before))))))

(e2e-scenario "shutdown"
  (let ((workspaces (with-current-buffer e2e-source (lsp-workspaces))))
    (with-current-buffer e2e-source (lsp-workspace-shutdown (car workspaces)))
    `((stopped . ,(if (e2e-wait (lambda () (cl-notany (lambda (w) (process-live-p
                                                                   (lsp--workspace-proc w)))
                                                      workspaces))
                                30)
                      t :json-false)))))

(kill-emacs 0)
;;; e2e-lsp-mode.el ends here
